"""Each module's Executors stop watching for results before the next module starts.

A result watcher lives until every future of its Executor is done, as in concurrent.futures
and Globus Compute. One left behind by a test whose tasks are never answered polls its
module's broker after that broker is gone, and its warnings land in a later test's captured
logs. This plugin fails the module that leaves one; `abandon` is how a test lets go of an
Executor whose tasks will never be answered, as its process's exit would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from fnrelay import Executor

NAME = "fnrelay-result-watcher"
#: A watcher of futures answered at the module's end may take this long to see it.
GRACE = 10.0


def abandon(ex: Executor) -> None:
    """Stop `ex` and its result watcher without waiting for its futures: what the end of its
    process does. No public call does this, by design: shutdown leaves the watcher until
    every future sent is done."""
    ex.shutdown(wait=False, cancel_futures=True)
    ex._stop.set()
    if ex._watcher is not None:
        ex._watcher.join()


def _watchers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == NAME and t.is_alive()}


@pytest.fixture(autouse=True, scope="module")
def _no_leftover_watchers() -> Iterator[None]:
    before = _watchers()
    yield
    deadline = time.monotonic() + GRACE
    while (left := _watchers() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        pytest.fail(f"{len(left)} Executor result watcher(s) outlived this module: a test "
                    "left futures that are never answered (see support.leftover_watchers."
                    "abandon)", pytrace=False)
