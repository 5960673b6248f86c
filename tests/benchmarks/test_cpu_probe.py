"""The per-process CPU probe (benchmarks.cpu) counts a process's descendants only when asked."""

from __future__ import annotations

import multiprocessing
import os
import time

from benchmarks.cpu import cpu_seconds


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_of_a_busy_child_counts_for_its_parent_tree_only() -> None:
    child = multiprocessing.get_context("fork").Process(target=_burn, args=(0.5,))
    tree_before, own_before = cpu_seconds(os.getpid()), cpu_seconds(os.getpid(), False)
    child.start()
    deadline = time.monotonic() + 30
    while cpu_seconds(child.pid) < 0.2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the child is still busy (it burns 0.5 s): counted while it lives
    tree_during = cpu_seconds(os.getpid())
    own_during = cpu_seconds(os.getpid(), False)
    child.join()
    assert tree_during - tree_before >= 0.2
    assert own_during - own_before < 0.15
