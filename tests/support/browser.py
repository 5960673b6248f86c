"""Debian's Chromium driven by Playwright, offline: no browser download, and every request
to an address other than this machine's aborted and recorded, so a test can assert that a
page loads nothing from a CDN or anywhere else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
#: Headless and quiet: no GPU, no QUIC, no first-run, update or sync traffic of its own.
#: --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium (Playwright gives each launch a fresh profile directory)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def offline_context(browser: Browser, attempted: list[str]) -> BrowserContext:
    """A new context (its own cookies) whose requests to non-local hosts are aborted and
    appended to `attempted`."""
    context = browser.new_context()

    def guard(route: Route) -> None:
        if (urlsplit(route.request.url).hostname or "") in LOCAL_HOSTS:
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return context
