"""Saying at once that a request to the broker is being retried.

globus-sdk retries a request that could not reach the broker, or that the broker answered
"unavailable" (502, 503, 504; 429), for about 15 s, in silence: a user's submit() seemed to
hang. The check here runs first among the client's retry checks, decides nothing, and logs a
WARNING when a request is about to be retried (naming the broker's URL, the reason and for how
long it retries): once per outage, and again after REPEAT seconds for a user still trying.
Callers that report an outage themselves (the Executor's result poller) make their requests
`silenced()`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator

from globus_sdk.transport import RetryCheckResult, RetryContext

log = logging.getLogger(__name__)

REPEAT = 60.0  # seconds after which a continuing outage is said again

_silenced = threading.local()


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """No notice for the requests made inside (their caller reports the outage itself)."""
    _silenced.on = True
    try:
        yield
    finally:
        _silenced.on = False


class RetryNotice:
    """A globus-sdk retry check that only reports: once per outage of the broker."""

    def __init__(self, broker_url: str):
        self.broker_url = broker_url
        self._lock = threading.Lock()
        self._warned: float | None = None  # when, if no request has succeeded since

    def __call__(self, ctx: RetryContext) -> RetryCheckResult:
        config = ctx.caller_info.retry_config
        reason = _reason(ctx, config.transient_error_status_codes)
        with self._lock:
            if reason is None:
                self._warned = None
                return RetryCheckResult.no_decision
            said = self._warned is not None and time.monotonic() - self._warned < REPEAT
            if said or ctx.attempt >= config.max_retries or getattr(_silenced, "on", False):
                return RetryCheckResult.no_decision  # said already, or no retry follows
            self._warned = time.monotonic()
        seconds = sum(min(0.5 * 2 ** a, config.max_sleep)
                      for a in range(ctx.attempt, config.max_retries))
        log.warning("the broker at %s %s; retrying for about %.0f s", self.broker_url, reason,
                    seconds)
        return RetryCheckResult.no_decision


def _reason(ctx: RetryContext, transient: tuple[int, ...]) -> str | None:
    """Why the request failed in a way that is retried; None when it did not."""
    if ctx.exception is not None:
        return f"cannot be reached ({_short(ctx.exception)})"
    response = ctx.response
    if response is None or response.status_code not in transient:
        return None
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return f"answers HTTP {response.status_code} ({message or response.reason})"


def _short(error: BaseException) -> str:
    """The operating system's reason in requests' long error text ("Connection refused")."""
    found = re.search(r"\[Errno -?\d+\] ([^\"')]+)", str(error))
    return found.group(1).strip() if found else type(error).__name__
