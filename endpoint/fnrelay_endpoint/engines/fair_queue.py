"""Queued tasks taken round-robin across submitters, FIFO within each.

The local engine hands its workers tasks from it, the batch engine its jobs. An endpoint
shared by `allowed_functions` journals and queues every task it is sent at once (the journal,
not RabbitMQ, holds the backlog), so a plain FIFO would make one user's lone call wait behind
another's whole flood. Taking one task per submitter in turn bounds that wait by the number
of submitters with work queued, whatever each has queued. The submitter is the broker's user
id (`TaskMessage.submitter`, which the agent trusts only from the broker); tasks without one
share one turn.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator

from fnrelay.wire import TaskMessage


class FairQueue:
    """A deque-like queue of tasks (append, popleft, remove, clear, len, iteration)."""

    def __init__(self) -> None:
        self._lanes: dict[str, collections.deque[TaskMessage]] = {}
        self._turns: collections.deque[str] = collections.deque()  # lanes with work, in turn
        self._len = 0

    def append(self, task: TaskMessage) -> None:
        key = task.submitter or ""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = collections.deque()
            self._turns.append(key)
        lane.append(task)
        self._len += 1

    def popleft(self) -> TaskMessage:
        """The next submitter's oldest task; IndexError when empty."""
        if not self._turns:
            raise IndexError("pop from an empty FairQueue")
        key = self._turns.popleft()
        lane = self._lanes[key]
        task = lane.popleft()
        if lane:
            self._turns.append(key)
        else:
            del self._lanes[key]
        self._len -= 1
        return task

    def peek(self) -> TaskMessage:
        """What `popleft` would return, left queued; IndexError when empty."""
        if not self._turns:
            raise IndexError("peek at an empty FairQueue")
        return self._lanes[self._turns[0]][0]

    def push_front(self, tasks: Iterable[TaskMessage]) -> None:
        """Put taken tasks back in front, in their order, their submitters' turns first (a
        batch submission that failed for now is retried as it was)."""
        for task in reversed(list(tasks)):
            key = task.submitter or ""
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = collections.deque()
            else:
                self._turns.remove(key)
            self._turns.appendleft(key)
            lane.appendleft(task)
            self._len += 1

    def take(self, wanted: Callable[[TaskMessage], bool], limit: int) -> list[TaskMessage]:
        """Up to `limit` queued tasks that are `wanted`, one per submitter in turn (each
        submitter's in order); the others keep their places. One pass over the queue: a
        batch job packs tasks out of a backlog of any size."""
        lanes = [(key, [t for t in self._lanes[key] if wanted(t)]) for key in self._turns]
        picked: list[TaskMessage] = []
        depth = 0
        while len(picked) < limit and any(len(ts) > depth for _, ts in lanes):
            picked += [ts[depth] for _, ts in lanes if len(ts) > depth][:limit - len(picked)]
            depth += 1
        gone = {id(t) for t in picked}
        for key, _ in lanes:
            kept = collections.deque(t for t in self._lanes[key] if id(t) not in gone)
            if kept:
                self._lanes[key] = kept
            else:
                del self._lanes[key]
                self._turns.remove(key)
        self._len -= len(picked)
        return picked

    def remove(self, task: TaskMessage) -> None:
        key = task.submitter or ""
        lane = self._lanes.get(key)
        if lane is None:
            raise ValueError("task not queued")
        lane.remove(task)
        self._len -= 1
        if not lane:
            del self._lanes[key]
            self._turns.remove(key)

    def clear(self) -> None:
        self._lanes.clear()
        self._turns.clear()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[TaskMessage]:
        """Every queued task, lane by lane (a snapshot: callers may remove while iterating)."""
        return iter([t for lane in list(self._lanes.values()) for t in lane])


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
