"""How the templates show times, durations and an endpoint's heartbeat figures (Jinja2
filters): one place, so every page words them alike."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any


def when(t: float | None) -> str:
    """A UTC time to the second ('' for none)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """Seconds as the largest fitting unit: 850 ms, 12.3 s, 4 min 5 s, 2 h 10 min."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def ago(t: float | None) -> str:
    """How long ago `t` was ('never' for none)."""
    return "never" if t is None else f"{duration(max(0.0, time.time() - t))} ago"


def in_use(details: dict[str, Any]) -> str:
    """Workers, jobs or blocks in use, as the endpoint's engine reports them."""
    if "workers" in details:
        return f"{details.get('busy', 0)}/{details['workers']} workers busy, " \
               f"{details.get('queued', 0)} queued"
    if "jobs" in details:
        return f"{details['jobs']} batch jobs, {details.get('submitting', 0)} submitting"
    if "running" in details:
        return f"{details['running']} running, {details.get('queued', 0)} queued"
    return ""


def pythons(details: dict[str, Any]) -> str:
    """The Python version(s) the endpoint runs tasks with."""
    versions = details.get("python_versions")
    if isinstance(versions, list) and versions:
        return ", ".join(str(v) for v in versions)
    return str(details.get("python_version") or "")


def timeline(history: list[dict[str, Any]], end: float | None) -> list[dict[str, Any]]:
    """Each step of a task's history with the time spent in it: until the next step, and
    for the last step until `end` (its completion; now while it is pending)."""
    steps = []
    for i, h in enumerate(history):
        until = history[i + 1]["time"] if i + 1 < len(history) else end
        steps.append({**h, "spent": None if until is None else max(0.0, until - h["time"])})
    return steps


FILTERS = {"when": when, "duration": duration, "ago": ago, "in_use": in_use,
           "pythons": pythons}
