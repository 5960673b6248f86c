"""The endpoint agent (pull mode): register, consume tasks, run them, publish results.

The agent runs the endpoint's life: it recovers the journal's unfinished tasks, registers,
consumes over one AMQP `Session` at a time (reconnecting with backoff), takes task and cancel
messages, and sends heartbeats; the `Outbox` takes what engines report to the journal and
the broker.

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

import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from fnrelay import backoff, wire
from fnrelay.amqp import dead_letter, parameter_list, process_events
from fnrelay.errors import BrokerError
from fnrelay.wire import Heartbeat, ResultMessage, StatusUpdate, TaskMessage
from fnrelay_endpoint.agent import retries
from fnrelay_endpoint.agent.blobs import BlobUploader
from fnrelay_endpoint.agent.journal import QUEUED, RUNNING, Journal
from fnrelay_endpoint.agent.outbox import Outbox
from fnrelay_endpoint.agent.publisher import SERVICE
from fnrelay_endpoint.agent.session import Session
from fnrelay_endpoint.broker_api import BrokerAPI, Stopped, retry
from fnrelay_endpoint.config.model import EndpointConfig, EndpointPaths
from fnrelay_endpoint.engines.base import RUNNING_HOLD, make_engine
from fnrelay_endpoint.worker import ENV_RESULT_SIZE_LIMIT

log = logging.getLogger(__name__)

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
        self.outbox = Outbox(endpoint_id, config, journal, self.engine, self._start_task)
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._hold_pending = False
        self._conn: pika.BlockingConnection | None = None
        self._session: Session | None = None  # the current one, for the I/O thread
        self._broker_user: str | None = None
        self._retry_pending = False
        self._consumer_tag = ""
        self.heartbeat_period = 10.0
        #: AMQP connections lost since this process started (heartbeats report it).
        self.reconnects = 0
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
                    if self._serve(reg, on_ready):
                        attempt = 0
                    on_ready = None
                except (pika.exceptions.AMQPError, OSError) as e:
                    delay = backoff.delay(attempt, cap=MAX_BACKOFF)
                    attempt += 1
                    self.reconnects += 1
                    log.warning("AMQP connection lost (%s); reconnecting in %.1f s",
                                e or type(e).__name__, delay)
                    self._stop.wait(delay)
        except Stopped:
            pass
        finally:
            self.engine.shutdown()
            if self._blobs is not None:
                self._blobs.shutdown()
            self.outbox.drain()  # no session: results that finished meanwhile wait in the journal
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
                self.outbox.add_result(retries.interrupted(task, failures, limit))
                continue
            if failures:
                self.outbox.failures[task.task_id] = failures
                self.outbox.add_status(StatusUpdate(
                    task_id=task.task_id, status=wire.TaskState.WAITING_FOR_ENDPOINT.value,
                    detail=f"retry {failures} of {limit}: the endpoint stopped while it ran"))
            self._start_task(task, failures)

    def _start_tasks(self, tasks: list[TaskMessage]) -> None:
        for task in tasks:
            self._start_task(task)

    def _start_task(self, task: TaskMessage, failures: int = 0) -> None:
        if log.isEnabledFor(logging.DEBUG):  # one line per task: only when asked for
            log.debug("task received (attempt %d)", failures + 1,
                      extra={"task_id": task.task_id, "task_group_id": task.task_group_id})
        self.outbox.track(task)
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

        tries = [1]

        def note(error: BrokerError, delay: float) -> None:
            tries[0] += 1
            # a first start gives up: whoever started it should know how long they will wait
            limit = f" (try {tries[0]} of {attempts})" if attempts else ""
            log.warning("%s; retrying in %.1f s%s", error, delay, limit)

        reg = retry(lambda: self._api.update_endpoint(self.endpoint_id, name, metadata),
                    self._stop, on_retry=note, attempts=attempts, cap=MAX_BACKOFF)
        log.info("registered endpoint %s (%s) with %s", self.name, self.endpoint_id,
                 self.config.broker_url)
        return reg

    # --- one AMQP connection -----------------------------------------------------------------
    def _serve(self, reg: dict[str, Any], on_ready: Callable[[], None] | None) -> bool:
        """Consume until stop() or a connection error; True if it got as far as consuming."""
        params = parameter_list(reg["amqp_url"])
        conn = pika.BlockingConnection(params)
        session = Session(conn, getattr(params[0].credentials, "username", None),
                          self.endpoint_id)
        consuming = False
        try:
            #: Only the broker cancels: a task group's account may publish to this queue too
            #: (the direct path), but must not cancel other groups' tasks.
            self._broker_user = reg.get("broker_user")
            self._session = session
            session.start(reg["amqp_url"], self.journal, self._retry_unpublished_later,
                          _forwarded_key(reg, self.endpoint_id))
            sub = self._consumer_channel(conn, reg["task_queue"])
            self.outbox.session = session
            # A timer of the last connection that never ran must not hold back this one's.
            self._retry_pending = False
            with self._wake_lock:
                self._conn, self._wake_pending, self._hold_pending = conn, False, False
            self.outbox.publish_results(self.journal.unpublished())
            self._drain()
            self.heartbeat_period = float(self.config.heartbeat_period
                                          or reg.get("heartbeat_period") or 10.0)
            self._heartbeat()
            consuming = True
            log.info("consuming %s (prefetch %d)", reg.get("task_queue"), self.config.prefetch)
            if on_ready:
                on_ready()
            serviced = time.monotonic()
            results, groups = session.results, session.groups
            assert results is not None and groups is not None  # started above
            while not self._stop.is_set():
                process_events(conn, 1)
                if time.monotonic() - serviced > SERVICE:
                    serviced = time.monotonic()
                    groups.service()
                if results.failed.is_set():
                    raise pika.exceptions.AMQPConnectionError("the result publisher's "
                                                              "connection broke")
            self._stop_gracefully(sub)
        finally:
            with self._wake_lock:
                self._conn = None
            self.outbox.session = self._session = None
            session.stop_results()
            self.outbox.mark_published(session)  # its last confirms
            session.close()
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
        acker = self._session.acker if self._session is not None else None
        if acker is not None:
            acker.flush()  # what is journaled need not come again
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
            _check_submitter(tasks, props.user_id, self._broker_user)
            # New tasks start before they are journaled; the ack waits for the commit's fsync.
            acker = self._session.acker if self._session is not None else None
            to_run, to_publish = self.journal.add_tasks(tasks, before_commit=self._start_tasks,
                                                        durable=acker is None)
            if acker is None:
                channel.basic_ack(method.delivery_tag)  # journaled: safe to let go
            else:
                acker.ack_after_sync(channel, method.delivery_tag)
            log.debug("received %d task(s), %d new", len(tasks), len(to_run))
            self.outbox.publish_results(to_publish)
            return
        states = {tid: self.journal.cancel(tid) for tid in cancels}
        channel.basic_ack(method.delivery_tag)
        for tid, state in states.items():
            if state in (QUEUED, RUNNING):
                self.engine.cancel(tid)
            log.info("cancel %s (was %s)", tid, state or "not received yet",
                     extra={"task_id": tid})

    # --- engine callbacks (other threads) ----------------------------------------------------
    def _result_ready(self, result: ResultMessage) -> None:
        if self._blobs is not None and self._blobs.wants(result):
            self._blobs.submit(result)  # delivered when uploaded (or failed)
            return
        self._deliver(result)

    def _deliver(self, result: ResultMessage) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("task %s", result.status, extra={"task_id": result.task_id})
        if self.outbox.add_result(result):
            self._wake_later()  # nobody waits for the journal or the broker's copy
        else:
            self._wake()

    def _status_ready(self, update: StatusUpdate) -> None:
        self.outbox.add_status(update)
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
    def _drain(self) -> None:
        """The outbox's drain, with the next wake-up allowed again (a drain due is coalesced)."""
        with self._wake_lock:
            self._wake_pending = False
        self.outbox.drain()

    def _retry_unpublished_later(self) -> None:
        if self._retry_pending or self._conn is None:
            return
        self._retry_pending = True

        def retry() -> None:
            self._retry_pending = False
            self.outbox.publish_results(self.journal.unpublished())

        self._conn.call_later(5.0, retry)

    def _send_heartbeat(self, state: str) -> None:
        assert self._session is not None  # heartbeats go out during a session only
        # Confirms that came in since the last drain: the journal's figures count them.
        self.outbox.mark_published(self._session)
        info = {"state": state, "python_version": platform.python_version(),
                **self.engine.info(), "reconnects": self.reconnects,
                "journal": self.journal.figures()}
        self._session.publish(wire.MSG_HEARTBEAT, wire.encode_heartbeat(
            Heartbeat(endpoint_id=self.endpoint_id, info=info)))

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



def _check_submitter(tasks: list[TaskMessage], sender: str | None, broker: str | None) -> None:
    """Trust a task's `submitter` (its fair share of the workers) only from the broker: any
    other sender (an Executor's direct path) gets the lane of its own RabbitMQ account, so it
    cannot take another user's turn."""
    if broker is None or sender == broker:
        return
    for t in tasks:
        t.submitter = sender or "?"


def _forwarded_key(reg: dict[str, Any], endpoint_id: str) -> str | None:
    """The routing key of results already forwarded to their groups, if the broker offers one
    (older brokers bind one queue to every key, and would read it as another endpoint's id):
    then a flood of them waits in the broker's records queue, not before other users' results."""
    key = reg.get("forwarded_routing_key")
    return key if key == endpoint_id + wire.FORWARDED_SUFFIX else None
