"""The local engine's queue (fnrelay_endpoint.engines.fair_queue): round-robin across
submitters, FIFO within each, and the deque operations the engine relies on."""

from __future__ import annotations

import pytest

from fnrelay.wire import TaskMessage
from fnrelay_endpoint.engines.fair_queue import FairQueue


def task(tid: str, submitter: str | None) -> TaskMessage:
    return TaskMessage(task_id=tid, function_id="f", function="", payload="",
                       submitter=submitter)


def drain(q: FairQueue) -> list[str]:
    out = []
    while q:
        out.append(q.popleft().task_id)
    return out


def test_a_lone_task_is_taken_next_whatever_the_flood_before_it():
    q = FairQueue()
    for i in range(1000):
        q.append(task(f"m{i}", "mallory"))
    q.append(task("b0", "bob"))
    assert len(q) == 1001
    assert [q.popleft().task_id for _ in range(3)] == ["m0", "b0", "m1"]


def test_submitters_take_turns_and_each_keeps_its_order():
    q = FairQueue()
    for tid, who in [("a0", "a"), ("a1", "a"), ("a2", "a"), ("b0", "b"), ("n0", None),
                     ("b1", "b")]:
        q.append(task(tid, who))
    assert drain(q) == ["a0", "b0", "n0", "a1", "b1", "a2"]
    with pytest.raises(IndexError):
        q.popleft()


def test_without_submitters_it_is_fifo():
    q = FairQueue()
    for i in range(5):
        q.append(task(str(i), None))
    assert drain(q) == ["0", "1", "2", "3", "4"]


def test_remove_iterate_and_clear():
    q = FairQueue()
    tasks = [task("a0", "a"), task("b0", "b"), task("a1", "a")]
    for t in tasks:
        q.append(t)
    for t in q:  # the engine removes while it iterates
        if t.task_id == "b0":
            q.remove(t)
    assert sorted(t.task_id for t in q) == ["a0", "a1"] and len(q) == 2
    assert drain(q) == ["a0", "a1"]
    q.append(tasks[0])
    q.clear()
    assert not q and len(q) == 0 and list(q) == []
    with pytest.raises(ValueError):
        q.remove(tasks[0])
