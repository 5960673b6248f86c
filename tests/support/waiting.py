"""Waiting in tests: poll until something holds, with an upper bound that is not a timing
assertion (it only keeps a broken test from hanging)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Upper bound for anything a test waits for on a loaded 2-core machine.
WAIT = 120.0


def wait_for(check: Callable[[], T], what: str, timeout: float = WAIT,
             interval: float = 0.05) -> T:
    """Return `check()` once it is truthy; fail the test naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
