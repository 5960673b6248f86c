"""The pending-task table: every future an Executor has not finished with, and the rules that
settle one.

A future is queued (its submit entry kept by ``id(future)`` until the submitter claims it), then
in a send (``inflight`` counts the sends under way), then outstanding (by task id) until a
result settles it. One lock guards the table for the user's threads, the submitter and the
result watcher; it is reentrant because the Executor's public methods hold it while they call
in (a future's cancel() from shutdown()). Futures are resolved after the lock is released, so
their callbacks may use the Executor.

The settling rules:

* the first result for a task settles it; any later one is ignored (RabbitMQ delivers unacked
  results again after a reconnect, and REST polling may see a result the stream brought);
* a result the endpoint sent itself settles only a task this Executor published to that
  endpoint (the direct path): the broker checked the result of every other task, so anything
  else the endpoint's account says is dropped, and logged through the DropLog;
* a result that comes before its task id (the REST submit's answer still on its way) waits for
  that answer; once no send is under way, such results belonged to no future here and go;
* a future cancelled here is never settled again.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
from collections.abc import Callable
from typing import Any

from fnrelay import wire
from fnrelay.droplog import DropLog
from fnrelay.executor.future import FnRelayFuture, Success
from fnrelay.results import outcome

#: Queued calls taken for sending: each future with its submit entry.
Chunk = list[tuple[FnRelayFuture, dict[str, Any]]]
#: A future with the result that settles it, matched under the lock, resolved after it.
Match = tuple[FnRelayFuture, wire.ResultMessage]


class PendingTable:
    """Futures by state: queued, in a send, outstanding; see the module's settling rules.

    The fields are read directly on the hot path (the submit call, the watcher's idle check);
    they change only under ``lock``.
    """

    def __init__(self, dropped: DropLog):
        self.lock = threading.RLock()
        #: Futures in submission order for the submitter; None tells it to finish.
        self.queue: queue.Queue[FnRelayFuture | None] = queue.Queue()
        self.entries: dict[int, dict[str, Any]] = {}  # id(future) -> submit entry, until sent
        self.outstanding: dict[str, FnRelayFuture] = {}  # task id -> submitted, unresolved
        self.early: dict[str, wire.ResultMessage] = {}  # results that beat their task id
        self.inflight = 0  # sends under way
        self.closed = False  # shut down: no new submissions
        #: shutdown(cancel_futures=True): futures not claimed yet are cancelled, not sent;
        #: this reaches the ones the submitter took from the queue but has not claimed.
        self.cancel_unclaimed = False
        self._dropped = dropped

    # --- queued ------------------------------------------------------------------------------
    def put(self, future: FnRelayFuture, entry: dict[str, Any]) -> None:
        """Queue a new future (the caller holds the lock and has checked ``closed``)."""
        self.entries[id(future)] = entry
        self.queue.put(future)

    def claim(self, batch: list[FnRelayFuture]) -> Chunk:
        """The batch's futures that are still wanted, with their entries: from here on a future
        is cancelled through the broker."""
        live = []
        with self.lock:
            for future in batch:
                entry = self.entries.pop(id(future), None)
                if self.cancel_unclaimed:
                    cf.Future.cancel(future)
                if future.cancelled() or entry is None:
                    future._submitted.set()
                    continue
                future._claimed = True
                live.append((future, entry))
        return live

    def cancel_queued(self, future: FnRelayFuture) -> bool | None:
        """Cancel a future the submitter has not claimed (its entry goes, so the submitter
        skips it): whether it is cancelled, or None when only the broker can cancel it."""
        with self.lock:
            if future.done():
                return future.cancelled()
            if future._claimed:
                return None
            self.entries.pop(id(future), None)
        return cf.Future.cancel(future)

    def queued_futures(self) -> list[FnRelayFuture]:
        return [f for f in list(self.queue.queue) if f is not None]

    # --- sends -------------------------------------------------------------------------------
    def sending(self) -> None:
        with self.lock:
            self.inflight += 1

    def sent(self) -> None:
        """A send ended without task ids to record (done, failed or passed on)."""
        with self.lock:
            self._sent()

    def _sent(self) -> None:
        self.inflight -= 1
        if not self.inflight:
            self.early.clear()  # whatever is left was not ours to wait for

    def accepted(self, chunk: Chunk, task_ids: list[str]) -> None:
        """The broker accepted a REST send: its futures become outstanding (and results that
        came first settle them)."""
        early = []
        with self.lock:
            for (future, _), task_id in zip(chunk, task_ids, strict=True):
                future.task_id = task_id
                self.outstanding[task_id] = future
                if task_id in self.early:
                    early.append((future, self.early.pop(task_id)))
            self._sent()
        for future, result in early:
            settle(future, result)
        for future, _ in chunk:
            future._submitted.set()

    def publishing(self, chunk: Chunk, msgs: list[wire.TaskMessage]) -> None:
        """Futures about to be published to the endpoint: outstanding already, as their
        results may come back before the publish returns."""
        with self.lock:
            for (future, _), msg in zip(chunk, msgs, strict=True):
                future.task_id = msg.task_id
                future._direct = True
                self.outstanding[msg.task_id] = future

    def unpublished(self, chunk: Chunk, msgs: list[wire.TaskMessage]) -> None:
        """The publish failed: the futures go back to being unsent (REST takes them)."""
        with self.lock:
            for (future, _), msg in zip(chunk, msgs, strict=True):
                self.outstanding.pop(msg.task_id, None)
                future.task_id = None
                future._direct = False

    @staticmethod
    def fail(chunk: Chunk, exc: BaseException) -> None:
        for future, _ in chunk:
            future._resolve(False, exc)
            future._submitted.set()

    # --- results -----------------------------------------------------------------------------
    def _take(self, result: wire.ResultMessage, via_endpoint: bool) -> FnRelayFuture | None:
        """The future `result` settles, now taken out of the table (the caller holds the
        lock), or None if it settles none."""
        if via_endpoint:
            future = self.outstanding.get(result.task_id)
            if future is None or not future._direct:
                if future is not None:
                    self._dropped.note(f"the endpoint's result for task {result.task_id}, "
                                       "which was not sent to it directly")
                return None
        future = self.outstanding.pop(result.task_id, None)
        if future is None and self.inflight:  # its submit answer may still be on the way
            self.early[result.task_id] = result
        return future  # None: a duplicate, a task cancelled here, or not ours

    def settle_all(self, results: list[wire.ResultMessage], via_endpoint: bool = False) -> None:
        """Settle the futures these results belong to, by the module's rules."""
        with self.lock:
            matches = [(f, r) for r in results if (f := self._take(r, via_endpoint))]
        for future, result in matches:
            settle(future, result)

    def forget(self, task_id: str) -> None:
        """The broker cancelled the task: no result will settle its future."""
        with self.lock:
            self.outstanding.pop(task_id, None)

    def endpoint_ids(self) -> set[str | None]:
        """The endpoints outstanding tasks were sent to (None for reloaded ones)."""
        with self.lock:
            return {f._endpoint_id for f in self.outstanding.values()}

    def broker_task_ids(self) -> list[str]:
        """The outstanding tasks that went over REST: the broker has them (direct-path ones
        it records only later)."""
        with self.lock:
            return [i for i, f in self.outstanding.items() if not f._direct]

    def is_outstanding(self, task_id: str) -> bool:
        """Is the task sent and its result not here yet?"""
        with self.lock:
            return task_id in self.outstanding

    def task_ids(self) -> list[str]:
        with self.lock:
            return list(self.outstanding)

    def adopt(self, task_ids: list[str],
              make: Callable[[], FnRelayFuture]) -> list[FnRelayFuture]:
        """Futures for tasks submitted earlier (a re-attached task group), in their order: the
        table's own where it has one, else new outstanding ones."""
        futures = []
        with self.lock:
            for task_id in task_ids:
                future = self.outstanding.get(task_id)
                if future is None:
                    future = make()
                    future.task_id, future._claimed = task_id, True
                    future._submitted.set()
                    self.outstanding[task_id] = future
                futures.append(future)
        return futures

    # --- the end -----------------------------------------------------------------------------
    def finished(self) -> bool:
        """Shut down, everything sent, nothing left to wait for: the watcher may end."""
        with self.lock:
            return (self.closed and not self.outstanding and not self.inflight
                    and self.queue.empty() and not self.entries)

    def unresolved(self) -> list[FnRelayFuture]:
        with self.lock:
            return [f for f in self.queued_futures() if not f.done()] + list(
                self.outstanding.values())


def settle(future: FnRelayFuture, result: wire.ResultMessage) -> None:
    """Resolve `future` with `result`: a success's value is deserialized on first read."""
    if result.status == wire.TaskState.SUCCESS.value:
        outcome(result.task_id, result.status, None, None, result.details)  # version check
        future._resolve(True, Success(result.result))
        return
    ok, value = outcome(
        result.task_id, result.status, result.result, result.exception, result.details
    )
    future._resolve(ok, value)
