"""Queued tasks taken in turn across submitters, FIFO within each.

The local engine hands its workers tasks from it, the batch engine its jobs. An endpoint
shared by `allowed_functions` journals and queues every task it is sent at once (the journal,
not RabbitMQ, holds the backlog), so a plain FIFO would make one user's lone call wait behind
another's whole flood. The turns are TurnNumbers' (start-time fair queuing): each task is
numbered on from its submitter's last number or from the number last started, whichever is
later, and the lowest number goes first (the oldest among equals). A lone call that arrives
while a flood's task k runs is numbered k and goes next, ahead of the flood's k + 1; two busy
submitters alternate; a submitter idle for a while banks nothing. The submitter is the
broker's user id (`TaskMessage.submitter`, which the agent trusts only from the broker);
tasks without one share one turn.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from fnrelay.wire import TaskMessage


@dataclass(order=True)
class _Queued:
    turn: int  # its TurnNumbers number
    seq: int  # arrival order, among equal numbers
    task: TaskMessage = field(compare=False)


class FairQueue:
    """A deque-like queue of tasks (append, popleft, remove, clear, len, iteration)."""

    def __init__(self) -> None:
        self._lanes: dict[str, collections.deque[_Queued]] = {}
        self._turns = TurnNumbers()
        self._seq = itertools.count()
        self._front_seq = itertools.count(-1, -1)  # push_front's: ahead of every arrival
        self._len = 0

    def append(self, task: TaskMessage) -> None:
        key = task.submitter or ""
        item = _Queued(self._turns.number(key), next(self._seq), task)
        self._lanes.setdefault(key, collections.deque()).append(item)
        self._len += 1

    def _next_lane(self) -> str:
        """The lane whose oldest task has the lowest number; IndexError when empty."""
        if not self._lanes:
            raise IndexError("empty FairQueue")
        return min(self._lanes, key=lambda key: self._lanes[key][0])

    def popleft(self) -> TaskMessage:
        """The task whose turn it is, which thereby starts; IndexError when empty."""
        key = self._next_lane()
        lane = self._lanes[key]
        item = lane.popleft()
        if not lane:
            del self._lanes[key]
        self._len -= 1
        self._turns.started(item.turn)
        return item.task

    def peek(self) -> TaskMessage:
        """What `popleft` would return, left queued; IndexError when empty."""
        return self._lanes[self._next_lane()][0].task

    def push_front(self, tasks: Iterable[TaskMessage]) -> None:
        """Put taken tasks back in front, in their order, ahead of every queued task (a batch
        submission that failed for now is retried as it was)."""
        tasks = list(tasks)
        if not tasks:
            return
        first = min((lane[0].turn for lane in self._lanes.values()), default=0)
        for task in reversed(tasks):
            key = task.submitter or ""
            item = _Queued(first, next(self._front_seq), task)
            self._lanes.setdefault(key, collections.deque()).appendleft(item)
            self._len += 1

    def take(self, wanted: Callable[[TaskMessage], bool], limit: int) -> list[TaskMessage]:
        """Up to `limit` queued tasks that are `wanted`, in turn as `popleft` would take them
        (each submitter's in order); they start, the others keep their places. One pass over
        the queue: a batch job packs tasks out of a backlog of any size."""
        found = [[item for item in lane if wanted(item.task)] for lane in self._lanes.values()]
        picked = list(itertools.islice(heapq.merge(*found), limit))
        if not picked:
            return []
        gone = {id(item) for item in picked}
        for key in list(self._lanes):
            kept = collections.deque(i for i in self._lanes[key] if id(i) not in gone)
            if kept:
                self._lanes[key] = kept
            else:
                del self._lanes[key]
        self._len -= len(picked)
        self._turns.started(max(item.turn for item in picked))
        return [item.task for item in picked]

    def remove(self, task: TaskMessage) -> None:
        key = task.submitter or ""
        lane = self._lanes.get(key)
        item = next((i for i in lane or () if i.task is task or i.task == task), None)
        if lane is None or item is None:
            raise ValueError("task not queued")
        lane.remove(item)
        self._len -= 1
        if not lane:
            del self._lanes[key]

    def clear(self) -> None:
        self._lanes.clear()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[TaskMessage]:
        """Every queued task, lane by lane (a snapshot: callers may remove while iterating)."""
        return iter([i.task for lane in list(self._lanes.values()) for i in lane])


class TurnNumbers:
    """Priorities that make a scheduler serving the lowest first take submitters in turn.

    For an engine that hands every task to a scheduler with a queue of its own, where holding
    tasks back would hide the backlog from the scheduler's scaling (Parsl's interchange serves
    the lowest `priority` first, oldest first among equals). Each submitter's tasks are
    numbered on from the later of its own last number and the number last started (the
    clock): a flood's tasks get 0, 1, 2, ... while a lone call arriving when the flood's task
    k starts gets k, and runs next. A submitter idle for a while cannot bank numbers: it
    restarts at the clock. Not thread-safe: the caller holds its lock.
    """

    #: Above this many submitters remembered, those at or behind the clock are forgotten
    #: (they would restart at the clock anyway).
    PRUNE_ABOVE = 1000

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._clock = 0

    def number(self, submitter: str | None) -> int:
        key = submitter or ""
        n = max(self._next.get(key, 0), self._clock)
        self._next[key] = n + 1
        return n

    def started(self, number: int) -> None:
        """The task numbered `number` started: later arrivals number on from it."""
        if number <= self._clock:
            return
        self._clock = number
        if len(self._next) > self.PRUNE_ABOVE:
            self._next = {k: n for k, n in self._next.items() if n > self._clock}

    def __len__(self) -> int:
        """How many submitters are remembered (bounded by pruning, not by users seen)."""
        return len(self._next)
