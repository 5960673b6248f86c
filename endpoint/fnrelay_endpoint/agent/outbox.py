"""What engines report, on its way to the journal and the broker.

Engine threads add results and status updates (`add_result`, `add_status`); the I/O thread
`drain`s them: results of runs lost to infrastructure start their task again (within its
retry limit), direct-path results go to their task groups first, then everything is journaled
and published in batches. A result stays unpublished in the journal until RabbitMQ confirms
it (`mark_published`), so a crash or a broken connection loses none.

The one exception to "engine threads only enqueue": a lone direct-path result goes to its
group from the engine thread that got it (`add_result`), over the session's group sender, when
nothing else waits; the drain journals it a little later.
"""

from __future__ import annotations

import hashlib
import logging
import queue
from collections.abc import Callable
from typing import Any

import pika

from fnrelay import chunks, wire
from fnrelay.wire import ResultMessage, StatusUpdate, TaskMessage
from fnrelay_endpoint.agent import retries
from fnrelay_endpoint.agent.journal import Journal
from fnrelay_endpoint.agent.publisher import Batch, publish_to_group
from fnrelay_endpoint.agent.session import Session
from fnrelay_endpoint.config.model import EndpointConfig
from fnrelay_endpoint.engines.base import Engine
from fnrelay_endpoint.worker import exception_info, too_large_error

log = logging.getLogger(__name__)

#: Items per published `results` / `status` message: one confirm covers them all.
BATCH = 256


class Outbox:
    """The running tasks' bookkeeping and the drain from engines to journal and broker."""

    def __init__(self, endpoint_id: str, config: EndpointConfig, journal: Journal,
                 engine: Engine, start_task: Callable[[TaskMessage, int], None]) -> None:
        self.endpoint_id, self.config, self.journal, self.engine = (endpoint_id, config,
                                                                    journal, engine)
        #: Runs a task again (after a run lost to infrastructure), with its failure count.
        self.start_task = start_task
        #: The AMQP session results are published on; None between sessions.
        self.session: Session | None = None
        self._items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        #: Results an engine thread already sent to their groups: journaled and handed to the
        #: result publisher at the next drain, which may wait (RUNNING_HOLD, coalesced).
        self._sent: queue.SimpleQueue[ResultMessage] = queue.SimpleQueue()
        self.failures: dict[str, int] = {}  # task id -> runs lost to infrastructure
        self._tasks: dict[str, TaskMessage] = {}  # running tasks as received (for retries)
        #: Direct-path tasks not yet published: task id -> group (results go straight there).
        self._direct: dict[str, str] = {}
        #: Status updates a broken connection did not take (the I/O thread's alone).
        self._unsent: list[StatusUpdate] = []

    def track(self, task: TaskMessage) -> None:
        """Note a task the engine is about to run (I/O thread)."""
        self._tasks[task.task_id] = task
        if task.direct and task.task_group_id:
            self._direct[task.task_id] = task.task_group_id

    # --- from engine threads -----------------------------------------------------------------
    def add_result(self, result: ResultMessage) -> bool:
        """Take a result; True if it is in its group already (the drain may wait)."""
        if self._send_lone(result):
            self._sent.put(result)
            return True
        self._items.put(("result", result))
        return False

    def add_status(self, update: StatusUpdate) -> None:
        self._items.put(("status", update))

    def _send_lone(self, result: ResultMessage) -> bool:
        """Publish a direct-path result to its group from this (engine) thread, if nothing
        else waits: a lone call's result then does not wait for the I/O thread to wake up.
        False leaves it to the I/O thread, which batches whatever piles up."""
        session = self.session
        groups = session.groups if session is not None else None
        if (groups is None or not self._items.empty() or self.engine.backlog()
                or retries.is_infrastructure(result) or self._checked_size(result) is not result):
            return False
        group_id = self._direct.pop(result.task_id, None)  # atomic: only this thread has it
        if group_id is None:
            return False
        if groups.try_send(group_id, self._with_attempt(result)):
            return True
        self._direct[result.task_id] = group_id  # not in the outbox yet: nobody else looks
        return False

    # --- the I/O thread ----------------------------------------------------------------------
    def drain(self) -> None:
        """Journal everything engines reported, then publish it in batches (only journal it
        between sessions)."""
        session = self.session
        results: list[ResultMessage] = []
        updates, self._unsent = self._unsent, []  # first: they came before what is queued
        while True:
            try:
                results.append(self._sent.get_nowait())
            except queue.Empty:
                break
        forwarded = {r.task_id for r in results}  # already in their groups
        while True:
            try:
                kind, item = self._items.get_nowait()
            except queue.Empty:
                break
            (results if kind == "result" else updates).append(item)
        results, retried = self._retry_or_finish(results)
        # Executors waiting on the direct path get their results first; the journal (and the
        # broker's copy) come after. A crash in between re-runs those tasks: they are
        # journaled as unfinished, and an Executor ignores a second result. A connection that
        # breaks in between (or pika fails in any other way) is no crash: nothing would run
        # them again, so they are journaled all the same, and the next session publishes them.
        broken: BaseException | None = None
        if session is not None:
            try:
                forwarded |= self._to_groups(session, results)
            except BaseException as e:  # noqa: BLE001 - re-raised below, once journaled
                broken = e
        self._add_records(results)
        # A task that already finished needs no separate "running" message: its result carries
        # the start time, from which the broker records the running step. A retried task
        # keeps it, so its history shows each attempt.
        finished = {r.task_id for r in results}
        updates = [u for u in updates if u.task_id not in finished]
        running = [u.task_id for u in updates
                   if u.status == wire.TaskState.RUNNING.value and u.task_id not in retried]
        if running:
            self.journal.mark_running(running)
        updates += retried.values()
        stored = [r for chunk in chunks.by_count(results, BATCH)
                  for r in self.journal.store_results(chunk)]
        for r in stored:
            self._tasks.pop(r.task_id, None)
            self.failures.pop(r.task_id, None)
        self.mark_published(session)
        if broken is not None:
            self._unsent = updates
            raise broken
        if session is None:
            return
        self._publish_updates(session, updates)
        if stored and session.results is not None:
            session.results.send(Batch(stored, forwarded))

    def _publish_updates(self, session: Session, updates: list[StatusUpdate]) -> None:
        """Publish status updates. Those a broken connection did not take wait in `_unsent`
        for the next session's drain (the broker refuses one about a task that has ended
        since); those RabbitMQ refuses are dropped, as a task's result still records its
        end (sent again, they would fail every session's first drain)."""
        for i, chunk in enumerate(chunks.by_count(updates, BATCH)):
            try:
                session.publish(wire.MSG_STATUS, wire.encode_status(chunk))
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
                log.warning("RabbitMQ did not take %d status update(s) (%s); dropped",
                            len(chunk), type(e).__name__)
            except BaseException:
                self._unsent = updates[i * BATCH:]
                raise

    def publish_results(self, results: list[ResultMessage]) -> None:
        """Hand results to the result publisher, after publishing direct-path ones to their
        groups; those it cannot publish stay unpublished in the journal for the next session.
        (`drain` does the same in two steps, with the journal write between them.)"""
        session = self.session
        if not results or session is None or session.results is None:
            return
        session.results.send(Batch(results, self._to_groups(session, results)))

    def mark_published(self, session: Session | None) -> None:
        """Mark in the journal what the session's result publisher got confirmed."""
        pub = session.results if session is not None else None
        while pub is not None:
            try:
                ids = pub.published.get_nowait()
            except queue.Empty:
                return
            self.journal.mark_published(ids)

    def _retry_or_finish(self, results: list[ResultMessage]
                         ) -> tuple[list[ResultMessage], dict[str, StatusUpdate]]:
        """Re-run tasks whose run was lost to infrastructure (within their limit); returns
        the results to record and a waiting-for-endpoint update per retried task."""
        final: list[ResultMessage] = []
        retried: dict[str, StatusUpdate] = {}
        for r in results:
            r = self._checked_size(r)
            task = self._tasks.get(r.task_id)
            if not retries.is_infrastructure(r) or task is None:
                final.append(self._with_attempt(r))
                continue
            limit = retries.max_retries(task, self.config.max_retries)
            if self.failures.get(r.task_id, 0) >= limit:
                final.append(retries.gave_up(r, self.failures.get(r.task_id, 0) + 1, limit))
                continue
            stored, failures = self.journal.record_failure(r.task_id)
            if stored is None:  # finished or cancelled meanwhile
                continue
            self.failures[r.task_id] = failures
            reason = retries.reason_of(r)
            log.warning("task %s: %s; retry %d of %d", r.task_id, reason, failures, limit)
            retried[r.task_id] = StatusUpdate(
                task_id=r.task_id, status=wire.TaskState.WAITING_FOR_ENDPOINT.value,
                detail=f"retry {failures} of {limit}: {reason}")
            self.start_task(task, failures)
        return final, retried

    def _add_records(self, results: list[ResultMessage]) -> None:
        """Give each direct-path result what the broker needs to record its task, in case the
        Executor's record of it never reaches the broker (the copies to the groups are out
        already: an Executor has no use for it)."""
        for r in results:
            task = self._tasks.get(r.task_id)
            if task is not None and task.direct:
                r.record = wire.DirectRecord(
                    function_id=task.function_id,
                    function_sha256=hashlib.sha256(task.function.encode()).hexdigest(),
                    resource_specification=task.resource_specification or {},
                    user_endpoint_config=task.user_endpoint_config or {},
                    max_retries=task.max_retries,
                )

    def _with_attempt(self, r: ResultMessage) -> ResultMessage:
        failures = self.failures.get(r.task_id, 0)
        if failures:
            r.details = {**(r.details or {}), "attempt": failures + 1}
        return r

    def _checked_size(self, r: ResultMessage) -> ResultMessage:
        """Backstop for engines whose workers do not know the endpoint's limit."""
        limit = self.config.result_size_limit
        if r.result is None or len(r.result) <= limit:
            return r
        size = len(r.result.encode())
        if size <= limit:
            return r
        return ResultMessage(task_id=r.task_id, status=wire.TaskState.FAILED.value,
                             exception=exception_info(too_large_error(size, limit)),
                             details={**(r.details or {}), "result_size": size},
                             task_group_id=r.task_group_id)

    def _to_groups(self, session: Session, results: list[ResultMessage]) -> set[str]:
        """Publish direct-path results straight to their task groups' queues; returns the ids
        RabbitMQ took. The Executor takes them from this account only (`user_id`).

        Transient messages: their confirms do not wait for a disk write, so this I/O thread
        is soon free for the next task. The broker's copy is persistent and the broker has
        the result recorded; an Executor that loses these with a RabbitMQ restart gets them
        from the broker's records (it polls while it reconnects). Results a group queue does
        not take are left to the broker to forward (an Executor ignores a second copy).
        """
        groups = {r.task_id: g for r in results
                  if (g := self._direct.pop(r.task_id, None)) is not None}
        by_group: dict[str, list[ResultMessage]] = {}
        for r in results:
            if r.task_id in groups:
                by_group.setdefault(groups[r.task_id], []).append(r)
        sent: set[str] = set()
        for group_id, items in by_group.items():
            for chunk in chunks.by_count(items, BATCH):
                if publish_to_group(session.pub, session.user_id, self.endpoint_id, group_id,
                                    chunk):
                    sent.update(r.task_id for r in chunk)
        return sent
