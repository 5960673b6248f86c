"""Waiting in tests: poll until something holds, with an upper bound that is not a timing
assertion (it only keeps a broken test from hanging)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

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


def wait_recorded(client: Any, task_id: str, status: str, timeout: float = WAIT) -> dict:
    """The broker's record of the task once it has `status`. On the direct path the broker
    records a task up to ~50 ms after its submit (and its result after the future has it),
    so at first it may not know the task at all."""
    from fnrelay import errors

    def recorded() -> Any:
        try:
            r = client.task_record(task_id)
        except errors.NotFoundError:
            return None
        return r["status"] == status and r

    return wait_for(recorded, f"task {task_id} recorded as {status}", timeout)
