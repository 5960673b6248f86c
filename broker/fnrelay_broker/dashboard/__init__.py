"""The broker's web dashboard (/dashboard): server-rendered pages with htmx, no separate
server. static/htmx.min.js is htmx 2.0.11 (npm htmx.org@2.0.11, licence 0BSD), shipped in
the wheel so no page loads anything from a CDN."""

from fnrelay_broker.dashboard.views import install

__all__ = ["install"]
