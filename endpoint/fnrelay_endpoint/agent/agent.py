"""The endpoint agent (pull mode): register, consume tasks, run them, publish results.

One I/O thread owns the pika connection (pika is not thread-safe). Engine threads never touch
it: they put results and status updates on a queue and wake the I/O thread with
`add_callback_threadsafe` (one pending wake-up at a time). The exception that proves the rule:
a lone direct-path result goes to its task group from the engine thread that got it, over
the GroupSender's connection of its own, and the I/O thread journals it a little later.

Every task is journaled before its message is acked (the fsync and the ack come from the
Acker's thread, so they do not hold up results) and no message is held while a task runs, so
RabbitMQ's consumer_timeout never fires and a crash loses nothing; results stay in the journal
until their publish is confirmed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from fnrelay import backoff, chunks, wire
from fnrelay.amqp import connection_parameters, dead_letter
from fnrelay.errors import BrokerError
from fnrelay.wire import Heartbeat, ResultMessage, StatusUpdate, TaskMessage
from fnrelay_endpoint.agent import retries
from fnrelay_endpoint.agent.acker import Acker
from fnrelay_endpoint.agent.blobs import BlobUploader
from fnrelay_endpoint.agent.journal import QUEUED, RUNNING, Journal
from fnrelay_endpoint.agent.publisher import (
    SERVICE,
    Batch,
    GroupSender,
    ResultPublisher,
    publish_to_group,
)
from fnrelay_endpoint.broker_api import BrokerAPI, Stopped, retry
from fnrelay_endpoint.config.model import EndpointConfig, EndpointPaths
from fnrelay_endpoint.engines.base import RUNNING_HOLD, make_engine
from fnrelay_endpoint.worker import ENV_RESULT_SIZE_LIMIT, exception_info, too_large_error

log = logging.getLogger(__name__)

#: Items per published `results` / `status` message: one confirm covers them all.
BATCH = 256
#: Registration attempts at first start before giving up (later reconnects retry forever).
FIRST_REGISTER_ATTEMPTS = 5
MAX_BACKOFF = 60.0
#: Seconds between journal prunes while the agent runs (it also prunes at start).
PRUNE_PERIOD = 3600.0


class Agent:
    """Runs one endpoint until stop(); `run()` is the I/O thread."""

    def __init__(self, name: str, endpoint_id: str, config: EndpointConfig, journal: Journal,
                 token: str):
        self.name, self.endpoint_id, self.config = name, endpoint_id, config
        self.journal, self.token = journal, token
        # Workers (started after this, from this environment) enforce the result size limit;
        # with blobs on, results up to the blob limit come to the agent to be uploaded.
        os.environ[ENV_RESULT_SIZE_LIMIT] = str(max(config.result_size_limit,
                                                    config.result_blob_limit))
        self.engine = make_engine(config.engine, self._result_ready, self._status_ready,
                                  EndpointPaths.of(name).dir)
        self._stop = threading.Event()
        self._outbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        #: Results an engine thread already sent to their groups: journaled and handed to the
        #: result publisher at the next drain, which may wait (RUNNING_HOLD, coalesced).
        self._sent: queue.SimpleQueue[ResultMessage] = queue.SimpleQueue()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._hold_pending = False
        self._conn: pika.BlockingConnection | None = None
        self._pub: Any = None  # the publishing channel (confirms on)
        self._user_id: str | None = None
        self._broker_user: str | None = None
        self._retry_pending = False
        self._results_pub: ResultPublisher | None = None  # one per AMQP session
        self._acker: Acker | None = None  # one per AMQP session (WAL journals)
        self._groups: GroupSender | None = None  # one per AMQP session (lone results)
        self._consumer_tag = ""
        self.heartbeat_period = 10.0
        self._failures: dict[str, int] = {}  # task id -> runs lost to infrastructure
        self._tasks: dict[str, TaskMessage] = {}  # running tasks as received (for retries)
        #: Direct-path tasks not yet published: task id -> group (results go straight there).
        self._direct: dict[str, str] = {}
        self._next_prune = 0.0
        self._api = BrokerAPI(config.broker_url, token)
        self._blobs = (BlobUploader(config.broker_url, endpoint_id, token,
                                    config.result_blob_limit, config.result_size_limit,
                                    self._deliver, self._stop)
                       if config.result_blob_limit and token else None)

    # --- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the agent to stop (thread- and signal-safe)."""
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until stop(): (re)register, consume, reconnect with backoff."""
        self.engine.start()
        self._prune()
        self._recover()
        attempt, registered = 0, False
        try:
            while not self._stop.is_set():
                reg = self.register(None if registered else FIRST_REGISTER_ATTEMPTS)
                registered = True
                if self._blobs is not None:
                    self._blobs.offer(reg)
                try:
                    if self._session(reg, on_ready):
                        attempt = 0
                    on_ready = None
                except (pika.exceptions.AMQPError, OSError) as e:
                    delay = backoff.delay(attempt, cap=MAX_BACKOFF)
                    attempt += 1
                    log.warning("AMQP connection lost (%s); reconnecting in %.1f s",
                                e or type(e).__name__, delay)
                    self._stop.wait(delay)
        except Stopped:
            pass
        finally:
            self.engine.shutdown()
            if self._blobs is not None:
                self._blobs.shutdown()
            self._drain(publish=False)  # results that finished meanwhile wait in the journal
            log.info("endpoint %s stopped", self.name)

    def _recover(self) -> None:
        """Re-run the journal's unfinished tasks; one that was running when the endpoint
        stopped counts a failed attempt, and past its limit it fails (a poison task)."""
        # Batch jobs keep running while the endpoint is down (re-attached): not a lost run.
        unfinished = self.journal.recover(count_running=self.engine.name != "batch")
        if unfinished:
            log.info("re-running %d unfinished task(s) from the journal", len(unfinished))
        for task, failures in unfinished:
            limit = retries.max_retries(task, self.config.max_retries)
            if failures > limit:
                log.error("task %s: the endpoint stopped %d time(s) while running it; failing it",
                          task.task_id, failures)
                self._outbox.put(("result", retries.interrupted(task, failures, limit)))
                continue
            if failures:
                self._failures[task.task_id] = failures
                self._outbox.put(("status", StatusUpdate(
                    task_id=task.task_id, status=wire.TaskState.WAITING_FOR_ENDPOINT.value,
                    detail=f"retry {failures} of {limit}: the endpoint stopped while it ran")))
            self._start_task(task, failures)

    def _start_tasks(self, tasks: list[TaskMessage]) -> None:
        for task in tasks:
            self._start_task(task)

    def _start_task(self, task: TaskMessage, failures: int = 0) -> None:
        self._tasks[task.task_id] = task
        if task.direct and task.task_group_id:
            self._direct[task.task_id] = task.task_group_id
        self.engine.submit(retries.for_engine(task, failures))

    def _prune(self) -> None:
        """Forget published results older than the configured retention (hourly)."""
        if wire.now() < self._next_prune:
            return
        self._next_prune = wire.now() + PRUNE_PERIOD
        n = self.journal.prune(self.config.journal_retention)
        if n:
            log.info("pruned %d old journal row(s)", n)

    # --- registration ------------------------------------------------------------------------
    def register(self, attempts: int | None = None) -> dict[str, Any]:
        """PUT /v1/endpoints/{id}; retries connection errors and 5xx with backoff."""
        name = self.config.display_name or self.name
        metadata = {"hostname": socket.gethostname(), **self.engine.info()}

        def note(error: BrokerError, delay: float) -> None:
            log.warning("%s; retrying in %.1f s", error, delay)

        reg = retry(lambda: self._api.update_endpoint(self.endpoint_id, name, metadata),
                    self._stop, on_retry=note, attempts=attempts, cap=MAX_BACKOFF)
        log.info("registered endpoint %s (%s) with %s", self.name, self.endpoint_id,
                 self.config.broker_url)
        return reg

    # --- one AMQP connection -----------------------------------------------------------------
    def _session(self, reg: dict[str, Any], on_ready: Callable[[], None] | None) -> bool:
        """Consume until stop() or a connection error; True if it got as far as consuming."""
        params = connection_parameters(reg["amqp_url"])
        conn = pika.BlockingConnection(params)
        consuming = False
        try:
            self._user_id = getattr(params.credentials, "username", None)
            #: Only the broker cancels: a task group's account may publish to this queue too
            #: (the direct path), but must not cancel other groups' tasks.
            self._broker_user = reg.get("broker_user")
            self._pub = conn.channel()
            self._pub.confirm_delivery()
            self._results_pub = ResultPublisher(
                reg["amqp_url"], self.endpoint_id,
                lambda: conn.add_callback_threadsafe(self._retry_unpublished_later))
            self._results_pub.start()
            if self.journal.wal:
                self.journal.defer_checkpoints()  # the Acker's syncs run them
                self._acker = Acker(self.journal.sync, conn.add_callback_threadsafe)
                self._acker.start()
            self._groups = GroupSender(reg["amqp_url"], self.endpoint_id)
            sub = self._consumer_channel(conn, reg["task_queue"])
            with self._wake_lock:
                self._conn, self._wake_pending, self._hold_pending = conn, False, False
            self._publish_results(self.journal.unpublished())
            self._drain()
            self.heartbeat_period = float(self.config.heartbeat_period
                                          or reg.get("heartbeat_period") or 10.0)
            self._heartbeat()
            consuming = True
            log.info("consuming %s (prefetch %d)", reg.get("task_queue"), self.config.prefetch)
            if on_ready:
                on_ready()
            serviced = time.monotonic()
            while not self._stop.is_set():
                conn.process_data_events(time_limit=1)
                if time.monotonic() - serviced > SERVICE:
                    serviced = time.monotonic()
                    self._groups.service()
                if self._results_pub.failed.is_set():
                    raise pika.exceptions.AMQPConnectionError("the result publisher's "
                                                              "connection broke")
            self._stop_gracefully(sub)
        finally:
            with self._wake_lock:
                self._conn = None
            if self._results_pub is not None:
                self._results_pub.stop()
                self._mark_published()
                self._results_pub = None
            if self._acker is not None:
                self._acker.stop()
                self._acker = None
            if self._groups is not None:
                self._groups.close()
                self._groups = None
            self._pub = None
            try:
                if conn.is_open:
                    conn.close()
            except Exception:  # noqa: BLE001 - already broken; nothing left to close
                pass
        return consuming

    def _consumer_channel(self, conn: pika.BlockingConnection, task_queue: str) -> Any:
        """A channel consuming the task queue. The broker declares it at registration (the
        endpoint's own RabbitMQ account may not); a missing queue (the broker could not reach
        RabbitMQ then) closes the channel, and the reconnect re-registers."""
        sub = conn.channel()
        sub.queue_declare(task_queue, passive=True)
        sub.basic_qos(prefetch_count=self.config.prefetch)
        self._consumer_tag = sub.basic_consume(task_queue, self._on_message)
        return sub

    def _stop_gracefully(self, sub: Any) -> None:
        """Stop consuming, kill the workers, flush finished results, say `stopping`."""
        log.info("stopping: no new tasks; unfinished tasks stay in the journal")
        sub.basic_cancel(self._consumer_tag)  # prefetched, unacked messages go back
        if self._acker is not None:
            self._acker.flush()  # what is journaled need not come again
        self.engine.shutdown()
        self._drain()
        self._send_heartbeat("stopping")

    # --- incoming messages -------------------------------------------------------------------
    def _on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        try:
            if props.type == wire.MSG_TASKS:
                tasks = wire.decode_tasks(body)
                cancels: list[str] = []
            elif props.type == wire.MSG_CANCEL:
                tasks, cancels = [], wire.decode_cancel(body)
                if self._broker_user and props.user_id != self._broker_user:
                    log.warning("dropping a cancel from RabbitMQ user %r (only the broker, %r, "
                                "cancels)", props.user_id, self._broker_user)
                    channel.basic_ack(method.delivery_tag)
                    return
            else:
                raise ValueError(f"unknown message type {props.type!r}")
        except ValueError as e:  # wire.WireError, or an unknown type
            log.error("dead-lettering malformed message (type %r): %s", props.type, e)
            dead_letter(channel, method, props, body, f"malformed {props.type!r}: {e}")
            return
        if tasks:
            _check_direct(tasks, props.user_id)
            # New tasks start before they are journaled; the ack waits for the commit's fsync.
            acker = self._acker
            to_run, to_publish = self.journal.add_tasks(tasks, before_commit=self._start_tasks,
                                                        durable=acker is None)
            if acker is None:
                channel.basic_ack(method.delivery_tag)  # journaled: safe to let go
            else:
                acker.ack_after_sync(channel, method.delivery_tag)
            log.debug("received %d task(s), %d new", len(tasks), len(to_run))
            self._publish_results(to_publish)
            return
        states = {tid: self.journal.cancel(tid) for tid in cancels}
        channel.basic_ack(method.delivery_tag)
        for tid, state in states.items():
            if state in (QUEUED, RUNNING):
                self.engine.cancel(tid)
            log.info("cancel %s (was %s)", tid, state or "not received yet")

    # --- engine callbacks (other threads) ----------------------------------------------------
    def _result_ready(self, result: ResultMessage) -> None:
        if self._blobs is not None and self._blobs.wants(result):
            self._blobs.submit(result)  # delivered when uploaded (or failed)
            return
        self._deliver(result)

    def _deliver(self, result: ResultMessage) -> None:
        if self._send_lone(result):
            self._sent.put(result)
            self._wake_later()  # nobody waits for the journal or the broker's copy
            return
        self._outbox.put(("result", result))
        self._wake()

    def _send_lone(self, result: ResultMessage) -> bool:
        """Publish a direct-path result to its group from this (engine) thread, if nothing
        else waits: a lone call's result then does not wait for the I/O thread to wake up.
        False leaves it to the I/O thread, which batches whatever piles up."""
        groups = self._groups
        if (groups is None or not self._outbox.empty() or self.engine.backlog()
                or retries.is_infrastructure(result) or self._checked_size(result) is not result):
            return False
        group_id = self._direct.pop(result.task_id, None)  # atomic: only this thread has it
        if group_id is None:
            return False
        if groups.try_send(group_id, self._with_attempt(result)):
            return True
        self._direct[result.task_id] = group_id  # not in the outbox yet: nobody else looks
        return False

    def _status_ready(self, update: StatusUpdate) -> None:
        self._outbox.put(("status", update))
        if update.status == wire.TaskState.RUNNING.value and not self.engine.holds_running:
            self._wake_later()  # most tasks end first: their result carries the start
        else:
            self._wake()

    def _wake_later(self) -> None:
        """Schedule one _drain RUNNING_HOLD seconds from now (coalesced: one wake-up of the I/O
        thread for all that comes meanwhile)."""
        with self._wake_lock:
            if self._hold_pending or self._conn is None:
                return
            self._hold_pending = True
            conn = self._conn

        def drain_later() -> None:
            def drain() -> None:
                self._hold_pending = False
                self._drain()
            conn.call_later(RUNNING_HOLD, drain)

        try:
            conn.add_callback_threadsafe(drain_later)
        except Exception:  # noqa: BLE001 - connection closing: the next session drains
            self._hold_pending = False

    def _wake(self) -> None:
        """Schedule one _drain on the I/O thread (coalesced)."""
        with self._wake_lock:
            if self._wake_pending or self._conn is None:
                return  # a drain is due anyway (or the next session starts with one)
            self._wake_pending = True
            conn = self._conn
        try:
            conn.add_callback_threadsafe(self._drain)
        except Exception:  # noqa: BLE001 - connection closing: the next session drains
            log.debug("could not wake the I/O thread; the next session will drain")

    # --- outgoing messages (I/O thread only) -------------------------------------------------
    def _drain(self, publish: bool = True) -> None:
        """Journal everything engines reported, then publish it in batches."""
        with self._wake_lock:
            self._wake_pending = False
        results: list[ResultMessage] = []
        updates: list[StatusUpdate] = []
        while True:
            try:
                results.append(self._sent.get_nowait())
            except queue.Empty:
                break
        forwarded = {r.task_id for r in results}  # already in their groups
        while True:
            try:
                kind, item = self._outbox.get_nowait()
            except queue.Empty:
                break
            (results if kind == "result" else updates).append(item)
        results, retried = self._retry_or_finish(results)
        # Executors waiting on the direct path get their results first; the journal (and the
        # broker's copy) come after. A crash in between re-runs those tasks: they are
        # journaled as unfinished, and an Executor ignores a second result.
        if publish and self._pub is not None:
            forwarded |= self._to_groups(results)
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
            self._failures.pop(r.task_id, None)
        self._mark_published()
        if not publish or self._pub is None:
            return
        for chunk in chunks.by_count(updates, BATCH):
            self._publish(wire.MSG_STATUS, wire.encode_status(chunk))
        if stored and self._results_pub is not None:
            self._results_pub.send(Batch(stored, forwarded))

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
            if self._failures.get(r.task_id, 0) >= limit:
                final.append(retries.gave_up(r, self._failures.get(r.task_id, 0) + 1, limit))
                continue
            stored, failures = self.journal.record_failure(r.task_id)
            if stored is None:  # finished or cancelled meanwhile
                continue
            self._failures[r.task_id] = failures
            reason = retries.reason_of(r)
            log.warning("task %s: %s; retry %d of %d", r.task_id, reason, failures, limit)
            retried[r.task_id] = StatusUpdate(
                task_id=r.task_id, status=wire.TaskState.WAITING_FOR_ENDPOINT.value,
                detail=f"retry {failures} of {limit}: {reason}")
            self._start_task(task, failures)
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
        failures = self._failures.get(r.task_id, 0)
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

    def _publish_results(self, results: list[ResultMessage]) -> None:
        """Hand results to the result publisher, after publishing direct-path ones to their
        groups; those it cannot publish stay unpublished in the journal for the next session.
        (`_drain` does the same in two steps, with the journal write between them.)"""
        pub = self._results_pub
        if not results or pub is None:
            return
        pub.send(Batch(results, self._to_groups(results)))

    def _to_groups(self, results: list[ResultMessage]) -> set[str]:
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
                if publish_to_group(self._pub, self._user_id, self.endpoint_id, group_id, chunk):
                    sent.update(r.task_id for r in chunk)
        return sent

    def _mark_published(self) -> None:
        """Mark in the journal what the result publisher got confirmed."""
        pub = self._results_pub
        while pub is not None:
            try:
                ids = pub.published.get_nowait()
            except queue.Empty:
                return
            self.journal.mark_published(ids)

    def _retry_unpublished_later(self) -> None:
        if self._retry_pending or self._conn is None:
            return
        self._retry_pending = True

        def retry() -> None:
            self._retry_pending = False
            self._publish_results(self.journal.unpublished())

        self._conn.call_later(5.0, retry)

    def _publish(self, kind: str, body: bytes) -> None:
        """Persistent publish with a confirm (the channel is in confirm mode)."""
        self._pub.basic_publish(
            wire.RESULTS_EXCHANGE, self.endpoint_id, body,
            pika.BasicProperties(content_type=wire.CONTENT_TYPE, delivery_mode=2, type=kind,
                                 user_id=self._user_id),
            mandatory=True,
        )

    def _send_heartbeat(self, state: str) -> None:
        info = {"state": state, **self.engine.info()}
        self._publish(wire.MSG_HEARTBEAT,
                      wire.encode_heartbeat(Heartbeat(endpoint_id=self.endpoint_id, info=info)))

    def _heartbeat(self) -> None:
        if self._stop.is_set() or self._conn is None:
            return
        self._send_heartbeat("online")
        self._prune()
        self._conn.call_later(self.heartbeat_period, self._heartbeat)


def _check_direct(tasks: list[TaskMessage], sender: str | None) -> None:
    """Keep the direct-path mark only on tasks their own group's account sent (RabbitMQ
    validated `user_id`): their results then go to that group's queue too."""
    for t in tasks:
        t.direct = bool(t.direct and t.task_group_id and sender
                        and sender == wire.group_account(t.task_group_id))

