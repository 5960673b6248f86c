"""The local engine's queue (fnrelay_endpoint.engines.fair_queue): submitters in turn,
FIFO within each, and the deque operations the engine relies on; and the parsl
engine's TurnNumbers, the same turns as priorities for a scheduler's own queue."""

from __future__ import annotations

import pytest

from fnrelay.wire import TaskMessage
from fnrelay_endpoint.engines.fair_queue import FairQueue, TurnNumbers


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


def test_a_lone_task_arriving_while_the_flood_runs_goes_before_the_floods_next():
    """Round-robin put a new submitter's turn after the flood's, so each lone call waited for
    one more flood task than the one running; the turns now start at what runs."""
    q = FairQueue()
    for i in range(1000):
        q.append(task(f"m{i}", "mallory"))
    assert [q.popleft().task_id for _ in range(10)] == [f"m{i}" for i in range(10)]
    for call in range(3):  # bob's calls, one at a time, each while a flood task runs
        q.append(task(f"b{call}", "bob"))
        assert q.peek().task_id == f"b{call}"
        assert [q.popleft().task_id for _ in range(2)] == [f"b{call}", f"m{10 + call}"]


def test_two_busy_submitters_alternate_and_a_late_one_banks_nothing():
    q = FairQueue()
    for i in range(4):
        q.append(task(f"a{i}", "a"))
    assert q.popleft().task_id == "a0"
    for i in range(3):
        q.append(task(f"b{i}", "b"))
    assert drain(q) == ["b0", "a1", "b1", "a2", "b2", "a3"]  # b came while a0 ran


def test_tasks_put_back_go_first_in_their_order_and_take_interleaves():
    q = FairQueue()
    for tid, who in [("a0", "a"), ("a1", "a"), ("a2", "a"), ("b0", "b"), ("b1", "b")]:
        q.append(task(tid, who))
    taken = q.take(lambda t: True, 3)
    assert [t.task_id for t in taken] == ["a0", "b0", "a1"]
    q.push_front(taken)  # the job could not be submitted: retried as it was
    assert len(q) == 5
    assert drain(q) == ["a0", "b0", "a1", "b1", "a2"]


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


def served_lowest_first(numbered: list[tuple[int, str]]) -> list[str]:
    """The order Parsl's interchange serves (priority, then arrival)."""
    return [name for _, name in sorted(numbered, key=lambda pair: pair[0])]


def test_turn_numbers_put_a_late_lone_task_next_after_what_started():
    turns = TurnNumbers()
    flood = [(turns.number("mallory"), f"m{i}") for i in range(1000)]
    for n, _ in flood[:10]:  # ten of the flood have started
        turns.started(n)
    lone = (turns.number("bob"), "b0")
    pending = flood[10:] + [lone]
    assert served_lowest_first(pending)[:3] == ["b0", "m10", "m11"]


def test_turn_numbers_interleave_submitters_and_bank_nothing_while_idle():
    turns = TurnNumbers()
    numbered = [(turns.number(who), f"{who or 'n'}{i}") for who in ("a", "b", None)
                for i in range(3)]
    assert served_lowest_first(numbered) == ["a0", "b0", "n0", "a1", "b1", "n1",
                                             "a2", "b2", "n2"]
    for n, _ in numbered:
        turns.started(n)
    turns.started(50)  # others' tasks ran meanwhile: "a" restarts at the clock, not at 3
    assert turns.number("a") == 50


def test_turn_numbers_forget_submitters_behind_the_clock():
    turns = TurnNumbers()
    for i in range(TurnNumbers.PRUNE_ABOVE + 1):
        turns.number(f"user{i}")
    turns.number("busy")
    turns.number("busy")  # "busy" is at 2, ahead of the clock after started(1)
    assert len(turns) == TurnNumbers.PRUNE_ABOVE + 2
    turns.started(1)
    assert len(turns) == 1  # only "busy" is ahead of the clock
    assert turns.number("busy") == 2
    assert turns.number("user0") == 1  # as if remembered: it restarts at the clock
