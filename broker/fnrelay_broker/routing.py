"""AMQP out and in: the outbox publisher and the result consumer, one thread and one
connection each (pika is not thread-safe)."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from pika.spec import Basic

from fnrelay import logformat, wire
from fnrelay.amqp import dead_letter
from fnrelay.backoff import Backoff
from fnrelay.droplog import DropLog
from fnrelay.wire import globus
from fnrelay_broker import children, direct, gc_endpoints, inbound, tasks
from fnrelay_broker.accounts import endpoint_user, group_user
from fnrelay_broker.amqp import (
    declare_control_queue,
    declare_endpoint_queue,
    declare_exchanges,
    parameters,
    queue_type_hint,
)
from fnrelay_broker.db import Database
from fnrelay_broker.queues import CLASSIC, QueueNames, queue_arguments

if TYPE_CHECKING:
    from fnrelay_broker.access import AmqpAccess

log = logging.getLogger(__name__)

TASKS_PER_MESSAGE = 256
OUTBOX_BATCH = 2048
POLL_SECONDS = 1.0
PREFETCH = 64
#: Seconds before a result for a task not yet recorded is tried again (a direct-path task's
#: record and its result travel separately; see ResultConsumer.serve).
UNKNOWN_RETRY = 0.5
#: Seconds the consumer waits for a result before it turns to the records (and back).
RESULTS_WAIT = 0.02
#: Seconds direct-path records may wait to share one transaction, and how many may wait.
HOLD = 0.05
HOLD_MAX = PREFETCH // 2
#: Seconds a direct-path task's record may wait for its result, to be written with it.
RECORD_HOLD = 0.25
#: Direct-path records written in one transaction at most. The consumer's thread does nothing
#: else meanwhile, so this bounds how long a result that arrives during a flood of records
#: waits (HOLD_MAX messages of a flood's records, ~5,000 tasks, took 1-2 s); fewer a write
#: costs the flood's records more time in all, which other users' calls then share.
RECORDS_PER_WRITE = 2000

_PERSISTENT = 2


def _props(kind: str, user_id: str | None = None) -> pika.BasicProperties:
    """`user_id` (validated by RabbitMQ) proves to a multi-user manager that a control
    message comes from the broker's account."""
    return pika.BasicProperties(
        content_type=wire.CONTENT_TYPE, delivery_mode=_PERSISTENT, type=kind,
        user_id=user_id,
    )


class _Worker(threading.Thread):
    """A daemon thread that keeps one AMQP connection and reconnects with backoff."""

    def __init__(self, name: str, db: Database, amqp_url: str):
        super().__init__(name=name, daemon=True)
        self.db, self.amqp_url = db, amqp_url
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.backoff = Backoff(base=0.5, cap=30.0)
        self.amqp_user = parameters(amqp_url)[0].credentials.username

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)

    def run(self) -> None:
        while not self.stopping.is_set():
            conn = None
            try:
                conn = pika.BlockingConnection(parameters(self.amqp_url))
                self.connected.set()
                self.backoff.reset()
                log.info("%s connected to RabbitMQ", self.name)
                self.serve(conn)
            except Exception as e:  # noqa: BLE001 - any failure means: reconnect
                if self.stopping.is_set():
                    break
                delay = self.backoff.next_delay()
                log.warning("%s: %s: %s; retrying in %.1fs%s", self.name, type(e).__name__, e,
                            delay, queue_type_hint(e))
                self.connected.clear()
                self.stopping.wait(delay)
            finally:
                self.connected.clear()
                if conn is not None and conn.is_open:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass

    def serve(self, conn: pika.BlockingConnection) -> None:
        raise NotImplementedError


class OutboxPublisher(_Worker):
    """Publishes outbox rows in id order, many tasks per message, with publisher confirms.

    Rows are deleted only after RabbitMQ confirmed their message, so tasks accepted while
    RabbitMQ is down (or lost in a failed publish) go out on the next connection.
    """

    def __init__(self, db: Database, amqp_url: str, names: QueueNames,
                 access: AmqpAccess | None = None):
        super().__init__("fnrelay-outbox-publisher", db, amqp_url)
        self.names = names
        #: Hands out the accounts of official Globus Compute endpoints' children.
        self.access = access
        #: Whether an endpoint is an official Globus Compute one (that never changes).
        self.gc_kind: dict[str, bool] = {}
        self.wake_event = threading.Event()
        self.handoffs: deque[tasks.Handoff] = deque()

    def wake(self) -> None:
        """Called after a commit that added outbox rows: publish now, not at the next poll."""
        self.wake_event.set()

    def handoff(self, batch: tasks.Handoff) -> None:
        """Called after a submit's commit with its messages: publish them now, unread."""
        self.handoffs.append(batch)
        self.wake_event.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.wake_event.set()
        self.join(timeout)

    def serve(self, conn: pika.BlockingConnection) -> None:
        ch = conn.channel()
        ch.confirm_delivery()
        declare_exchanges(ch, self.names.queue_type)
        declared: set[str] = set()
        while not self.stopping.is_set():
            self.wake_event.clear()
            self._drain_handoffs(ch, declared)
            while self._drain_once(ch, declared):
                if self.stopping.is_set():
                    return
            conn.process_data_events(time_limit=0)
            self.wake_event.wait(POLL_SECONDS)

    def _drain_handoffs(self, ch: BlockingChannel, declared: set[str]) -> None:
        """Publish handed-off tasks whose outbox rows are still unclaimed (a poll may have
        sent them already; another replica may hold them)."""
        while self.handoffs:
            h = self.handoffs.popleft()
            for i in range(0, len(h.outbox_ids), OUTBOX_BATCH):
                oids = h.outbox_ids[i : i + OUTBOX_BATCH]
                msgs = dict(zip(oids, h.messages[i : i + OUTBOX_BATCH], strict=True))
                with tasks.claim_outbox(self.db, len(oids), only=oids) as rows:
                    # The row must still be this task's: SQLite reuses the ids of deleted rows.
                    live = [(oid, msgs[oid]) for oid, kind, _, task_id in rows
                            if kind == "task" and task_id == msgs[oid].task_id]
                    for j in range(0, len(live), TASKS_PER_MESSAGE):
                        part = live[j : j + TASKS_PER_MESSAGE]
                        self._publish_tasks(ch, declared, h.endpoint_id,
                                            [o for o, _ in part], [m for _, m in part])

    def _drain_once(self, ch: BlockingChannel, declared: set[str]) -> bool:
        """Publish one batch of outbox rows; False when the outbox is empty."""
        # Claimed rows are this replica's alone (PostgreSQL: row locks; see claim_outbox).
        with tasks.claim_outbox(self.db, OUTBOX_BATCH) as rows:
            if not rows:
                return False
            # Keep order: group consecutive runs, so a cancel never overtakes its task.
            runs: list[tuple[str, str, list[tuple[int, str]]]] = []
            by_key: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
            for oid, kind, endpoint_id, task_id in rows:
                by_key[(kind, endpoint_id)].append((oid, task_id))
            for (kind, endpoint_id), items in by_key.items():
                runs.append((kind, endpoint_id, items))
            runs.sort(key=lambda r: r[2][0][0])
            for kind, endpoint_id, items in runs:
                for i in range(0, len(items), TASKS_PER_MESSAGE):
                    self._publish(ch, declared, kind, endpoint_id,
                                  items[i : i + TASKS_PER_MESSAGE])
        return len(rows) == OUTBOX_BATCH

    def _publish(self, ch: BlockingChannel, declared: set[str], kind: str, endpoint_id: str,
                 items: list[tuple[int, str]]) -> None:
        oids = [o for o, _ in items]
        tids = [t for _, t in items]
        if kind == "task":
            self._publish_tasks(ch, declared, endpoint_id, oids,
                                tasks.task_messages(self.db, tids))
        elif kind == "cancel" and self.is_gc(endpoint_id):
            # An official endpoint has no cancel message (it would hold an unreadable one
            # unacked); the task is cancelled at the broker, a late result is ignored.
            tasks.finish_outbox(self.db, oids, [])
        elif kind == "cancel":
            _declare_endpoint_queue(ch, self.names, declared, endpoint_id)
            ch.basic_publish(wire.TASKS_EXCHANGE, endpoint_id, wire.encode_cancel(tids),
                             _props(wire.MSG_CANCEL, self.amqp_user))
            tasks.finish_outbox(self.db, oids, [])
        elif kind == "result":
            forward_results(ch, tasks.result_messages(self.db, tids), self.amqp_user)
            tasks.finish_outbox(self.db, oids, [])
        elif kind == children.OUTBOX_START_CHILD:
            # The latest submission's runtime (rows of one child come in submission order).
            latest = [(endpoint_id, tids[-1] if tids else None)]
            for manager_id, msg in children.start_messages(self.db, latest):
                if f"control:{manager_id}" not in declared:
                    declare_control_queue(ch, self.names, manager_id)
                    declared.add(f"control:{manager_id}")
                if self.is_gc(manager_id):
                    self._start_gc_child(ch, declared, manager_id, msg)
                    continue
                ch.basic_publish(
                    wire.TASKS_EXCHANGE, wire.control_routing_key(manager_id),
                    wire.encode_start_child(msg),
                    _props(wire.MSG_START_CHILD, self.amqp_user),
                )
            tasks.finish_outbox(self.db, oids, [])
        else:
            log.error("dropping outbox rows of unknown kind %r", kind)
            tasks.finish_outbox(self.db, oids, [])

    def is_gc(self, endpoint_id: str) -> bool:
        if endpoint_id not in self.gc_kind:
            self.gc_kind[endpoint_id] = bool(gc_endpoints.gc_endpoint_ids(self.db,
                                                                          [endpoint_id]))
        return self.gc_kind[endpoint_id]

    def _start_gc_child(self, ch: BlockingChannel, declared: set[str], manager_id: str,
                        msg: wire.StartChild) -> None:
        """GC's start command, with the child's account (its queue declared first: the
        child only checks it exists)."""
        if self.access is None:
            raise RuntimeError("no AMQP access to hand out a child's account")
        _declare_endpoint_queue(ch, self.names, declared, msg.child_id)
        creds = gc_endpoints.child_credentials(self.access, self.names, msg.child_id)
        children.mark_handed_out(self.db, msg.child_id)
        ch.basic_publish(wire.TASKS_EXCHANGE, wire.control_routing_key(manager_id),
                         gc_endpoints.start_command(manager_id, msg, creds),
                         pika.BasicProperties(content_type="application/json",
                                              delivery_mode=_PERSISTENT,
                                              timestamp=int(wire.now()),
                                              user_id=self.amqp_user))

    def _publish_tasks(self, ch: BlockingChannel, declared: set[str], endpoint_id: str,
                       oids: list[int], msgs: list[wire.TaskMessage]) -> None:
        """One message of tasks to an endpoint; its outbox rows go once RabbitMQ confirmed."""
        _declare_endpoint_queue(ch, self.names, declared, endpoint_id)
        published = wire.now()
        if msgs and self.is_gc(endpoint_id):
            for m in msgs:  # an official endpoint reads one messagepack Task per message
                body, headers = globus.pack_task(m.task_id, m.function_id, m.function,
                                                 m.payload, m.resource_specification,
                                                 m.result_serializers)
                ch.basic_publish(wire.TASKS_EXCHANGE, endpoint_id, body, pika.BasicProperties(
                    content_type="application/octet-stream", delivery_mode=_PERSISTENT,
                    headers=headers))
        elif msgs:
            ch.basic_publish(
                wire.TASKS_EXCHANGE, endpoint_id, wire.encode_tasks(msgs),
                _props(wire.MSG_TASKS, self.amqp_user), mandatory=False,
            )
        tasks.finish_outbox(self.db, oids, [m.task_id for m in msgs], published)


def _declare_endpoint_queue(ch: BlockingChannel, names: QueueNames, declared: set[str],
                            endpoint_id: str) -> None:
    """Declare an endpoint's queue once per publisher connection (`declared` remembers)."""
    if endpoint_id not in declared:
        declare_endpoint_queue(ch, names, endpoint_id)
        declared.add(endpoint_id)


def _gc_props(user_id: str | None) -> pika.BasicProperties:
    """The timestamp is what the official Executor shows as a failure's completion time."""
    return pika.BasicProperties(content_type="application/octet-stream",
                                delivery_mode=_PERSISTENT, user_id=user_id,
                                timestamp=int(wire.now()))


def forward_results(ch: BlockingChannel, results: list[wire.ResultMessage],
                    user_id: str | None) -> None:
    """Publish recorded results to their task groups' queues, one message per group, as
    `user_id` (the broker's account: Executors accept results only from known senders)."""
    groups: dict[str, list[wire.ResultMessage]] = defaultdict(list)
    for r in results:
        if r.task_group_id and r.format == wire.FORMAT_GLOBUS:
            # The official Executor reads one messagepack Result per message.
            ch.basic_publish(wire.GROUPS_EXCHANGE, wire.gc_routing_key(r.task_group_id),
                             globus.pack_result(r), _gc_props(user_id))
        elif r.task_group_id:
            groups[r.task_group_id].append(r)
    for group_id, items in groups.items():
        for i in range(0, len(items), TASKS_PER_MESSAGE):
            ch.basic_publish(
                wire.GROUPS_EXCHANGE, wire.group_routing_key(group_id),
                wire.encode_results(items[i : i + TASKS_PER_MESSAGE]),
                _props(wire.MSG_RESULTS, user_id),
            )


def _declare_inbound(ch: BlockingChannel, queue_type: str) -> None:
    """The broker's queues and bindings. The direct path's bookkeeping moves to a queue of
    its own: bound there first, then unbound from the results queue, so nothing published
    meanwhile is lost (a message routed to both is recorded once); what the results queue
    already holds is still consumed from it."""
    for queue in wire.BROKER_INBOUND_QUEUES:
        ch.queue_declare(queue, durable=True, arguments=queue_arguments(queue_type))
    ch.queue_bind(wire.BROKER_RESULTS_QUEUE, wire.RESULTS_EXCHANGE, routing_key="*")
    ch.queue_bind(wire.BROKER_RECORDS_QUEUE, wire.SUBMIT_EXCHANGE,
                  routing_key="*" + wire.RECORDS_SUFFIX)
    ch.queue_bind(wire.BROKER_RECORDS_QUEUE, wire.RESULTS_EXCHANGE,
                  routing_key="*" + wire.FORWARDED_SUFFIX)
    # Earlier bindings of the results queue ("#" on both exchanges, then the records' key).
    ch.queue_unbind(wire.BROKER_RESULTS_QUEUE, wire.RESULTS_EXCHANGE, routing_key="#")
    for key in ("#", "*" + wire.RECORDS_SUFFIX):
        ch.queue_unbind(wire.BROKER_RESULTS_QUEUE, wire.SUBMIT_EXCHANGE, routing_key=key)


class ResultConsumer(_Worker):
    """Consumes results, status updates and heartbeats from endpoints.

    The routing key is the sending endpoint's id; items about tasks routed elsewhere are
    ignored. A message is acked only after its effects are committed and forwarded.
    """

    def __init__(self, db: Database, amqp_url: str, verify_senders: bool = False,
                 queue_type: str = CLASSIC):
        super().__init__("fnrelay-result-consumer", db, amqp_url)
        self.queue_type = queue_type
        #: Accept a message only if its user_id is the account of its routing key's endpoint
        #: (on when every endpoint has its own RabbitMQ account).
        self.verify_senders = verify_senders

    def genuine(self, endpoint_id: str, method: Basic.Deliver,
                props: pika.BasicProperties) -> bool:
        """Was this message sent by the endpoint its routing key names? RabbitMQ validates
        `user_id` against the connection's account; topic permissions bind the routing key."""
        if not self.verify_senders:
            return True
        expected = endpoint_user(endpoint_id)
        if props.user_id == expected:
            return True
        log.warning("dropping %r message with routing key %s sent by RabbitMQ user %r "
                    "(only %r may send it)", props.type, method.routing_key, props.user_id,
                    expected)
        return False

    def serve(self, conn: pika.BlockingConnection) -> None:
        ch = conn.channel()
        declare_exchanges(ch, self.queue_type)
        _declare_inbound(ch, self.queue_type)
        ch.basic_qos(prefetch_count=PREFETCH)
        # The records on a connection of their own, served by this thread too: on one socket
        # a result queued behind a prefetch of records (up to a MB each) in the TCP stream and
        # in pika's dispatch, which serves one channel's deliveries to the end first.
        rconn = pika.BlockingConnection(parameters(self.amqp_url))
        try:
            self._serve(conn, ch, rconn)
        finally:
            if rconn.is_open:
                rconn.close()

    def _serve(self, conn: pika.BlockingConnection, ch: BlockingChannel,
               rconn: pika.BlockingConnection) -> None:
        rch = rconn.channel()
        rch.basic_qos(prefetch_count=PREFETCH)
        fwd = conn.channel()
        fwd.confirm_delivery()
        held = _Held(self, rconn, fwd)

        def on_message(channel: BlockingChannel, method: Basic.Deliver,
                       props: pika.BasicProperties, body: bytes) -> None:
            direct_path = method.exchange == wire.SUBMIT_EXCHANGE
            endpoint_id = _sender(method)
            if _gc_notice(method, props):
                props.type = globus.MSG_GC_STATUS
            elif not direct_path and not self.genuine(endpoint_id, method, props):
                channel.basic_reject(method.delivery_tag, requeue=False)
                return
            try:
                if direct_path:
                    held.add(channel, endpoint_id, method, props, body,
                             tasks=self.direct_tasks(props, body))
                    return
                if props.type == wire.MSG_RESULTS and _forwarded(props):
                    held.add(channel, endpoint_id, method, props, body,
                             results=inbound.results(body))
                    return
                if endpoint_id != method.routing_key:
                    raise ValueError("only forwarded results go with routing key "
                                     f"<endpoint id>{wire.FORWARDED_SUFFIX}")
                # Not after what is held: records wait for their results (RECORD_HOLD) and
                # come from another queue, so writing them first would only delay this.
                with logformat.about(endpoint_id=endpoint_id):
                    unknown = self.handle(fwd, endpoint_id, props.type, body)
            except (AMQPError, OSError):
                raise  # connection trouble: unacked, redelivered after reconnect
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                _reject(channel, method, props, body, e)
                return
            if unknown and props.type == wire.MSG_STATUS:
                held.await_records(channel, endpoint_id, method, unknown)
                return
            if unknown:
                held.retry_later(channel, endpoint_id, method, unknown, forwarded=False)
                return
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(wire.BROKER_RESULTS_QUEUE, on_message)
        rch.basic_consume(wire.BROKER_RECORDS_QUEUE, on_message)
        while not self.stopping.is_set():
            # No wait for results while a write of records is due: it would only slow them.
            conn.process_data_events(time_limit=0 if held.urgent else RESULTS_WAIT)
            rconn.process_data_events(time_limit=0)
        held.flush_all()

    def direct_tasks(self, props: pika.BasicProperties, body: bytes) -> list[wire.TaskMessage]:
        """The tasks of a direct-path message, if its sender is the account of the task group
        it names (RabbitMQ validated `user_id` and the routing key); else ValueError."""
        if props.type != wire.MSG_TASKS:
            raise ValueError(f"only {wire.MSG_TASKS!r} messages go to the submit exchange")
        msgs = inbound.direct_tasks(body)
        group_id = str(msgs[0].task_group_id)
        if not self.verify_senders or props.user_id != group_user(group_id):
            raise ValueError(f"sent by RabbitMQ user {props.user_id!r}, not by task group "
                             f"{group_id}'s account")
        return msgs

    def handle(self, fwd: BlockingChannel, endpoint_id: str, kind: str | None, body: bytes,
               ) -> list[Any]:
        """Apply one endpoint message; returns its results or status updates whose tasks are
        not recorded yet."""
        unknown: list[str] = []
        if kind == wire.MSG_RESULTS:
            results = inbound.results(body)
            recorded = tasks.record_results(self.db, endpoint_id, results, unknown)
            forward_results(fwd, recorded, self.amqp_user)
            return _of(results, unknown)
        if kind == globus.MSG_GC_RESULT:
            results = [inbound.gc_result(body)]
            recorded = tasks.record_results(self.db, endpoint_id, results, unknown)
            forward_results(fwd, recorded, self.amqp_user)
            return _of(results, unknown)
        if kind == globus.MSG_GC_STATUS:
            hb, error = inbound.gc_heartbeat(endpoint_id, body)
            if error is None:
                tasks.record_heartbeat(self.db, endpoint_id, hb)
            else:
                n = children.fail_own_tasks(self.db, endpoint_id, error)
                log.info("official endpoint: child %s cannot start (%d task(s)): %s",
                         endpoint_id, n, error)
            return []
        if kind == wire.MSG_STATUS:
            updates = inbound.status(body)
            tasks.apply_status(self.db, endpoint_id, updates, unknown)
            return _of(updates, unknown)
        elif kind == wire.MSG_CHILD_FAILED:
            failed = inbound.child_failed(body)
            n = children.fail_child_tasks(self.db, endpoint_id, failed.child_id, failed.error)
            log.info("manager %s: child %s failed (%d task(s)): %s", endpoint_id,
                     failed.child_id, n, failed.error)
        elif kind == wire.MSG_HEARTBEAT:
            tasks.record_heartbeat(self.db, endpoint_id, inbound.heartbeat(endpoint_id, body))
        else:
            raise ValueError(f"unknown message type {kind!r}")
        return []


def _of(items: list[Any], task_ids: list[str]) -> list[Any]:
    """Those of `items` (results or status updates) about the tasks `task_ids`."""
    wanted = set(task_ids)
    return [i for i in items if i.task_id in wanted]


#: Messages the broker drops or dead-letters: an endpoint can send many, the log says it
#: once a minute.
_DROPPED = DropLog(log)


def _reject(channel: BlockingChannel, method: Basic.Deliver, props: pika.BasicProperties,
            body: bytes, error: Exception) -> None:
    _DROPPED.note(f"(dead-lettering) a malformed {props.type!r} message from "
                  f"{method.routing_key}: {error}")
    dead_letter(channel, method, props, body, f"malformed {props.type!r}: {error}")


@dataclass
class _Delivery:
    channel: BlockingChannel  # the one it came on: delivery tags are per channel
    endpoint_id: str  # its routing key's
    method: Basic.Deliver
    props: pika.BasicProperties
    body: bytes
    tasks: list[wire.TaskMessage] = field(default_factory=list)
    results: list[wire.ResultMessage] = field(default_factory=list)
    received: float = field(default_factory=time.monotonic)
    #: When it came (wall clock): the time its task records were received, however long they
    #: are then held for their results.
    arrived: float = field(default_factory=wire.now)
    written: set[str] = field(default_factory=set)  # ids of `tasks` recorded so far
    recorded: set[str] = field(default_factory=set)  # ids of `results` recorded so far

    def due(self, now: float) -> bool:
        """Has this message waited long enough for its tasks' results (records) or its
        tasks' records (results)?"""
        return now - self.received >= RECORD_HOLD

    def waiting(self) -> list[wire.ResultMessage]:
        """Its results not recorded yet."""
        return [r for r in self.results if r.task_id not in self.recorded]


@dataclass(eq=False)  # each is one message: found by identity
class _Statuses:
    """A status message with updates for tasks not recorded yet."""

    channel: BlockingChannel
    endpoint_id: str
    method: Basic.Deliver
    updates: list[wire.StatusUpdate]  # those not applied yet


class _Held:
    """Direct-path messages (task records, results the endpoint already sent to their
    groups) waiting up to HOLD seconds to be recorded together: nobody waits for these
    records, and one transaction for many costs the broker far less CPU than one each. A
    task's record waits up to RECORD_HOLD for its result, to be written finished in one row
    (a short task's result comes within that): half the database work of two writes. A
    result that comes before its task's record (the Executor sends its records every
    RECORDS_LINGER) waits for it as long, for the same reason.

    Status updates for tasks not recorded yet wait for their records too (`await_records`):
    a task with a status is not short, so its record is written at once, then the updates,
    then its result, in the order they happened.

    Other messages do not wait for what is held: records come from a queue of their own
    (BROKER_RECORDS_QUEUE), so no order between the two holds anyway, and a result waiting
    for its task's record is retried (`retry_later`).
    """

    def __init__(self, consumer: ResultConsumer, conn: pika.BlockingConnection,
                 fwd: BlockingChannel) -> None:
        self.consumer, self.conn, self.fwd = consumer, conn, fwd
        self.items: list[_Delivery] = []
        self.statuses: list[_Statuses] = []
        self.unwritten: set[str] = set()  # ids of the held records not written yet
        self.scheduled = self.urgent = self.everything = False

    def add(self, channel: BlockingChannel, endpoint_id: str, method: Basic.Deliver,
            props: pika.BasicProperties, body: bytes,
            tasks: list[wire.TaskMessage] | None = None,
            results: list[wire.ResultMessage] | None = None) -> None:
        self.items.append(_Delivery(channel, endpoint_id, method, props, body, tasks or [],
                                    results or []))
        if tasks:
            self.unwritten.update(m.task_id for m in tasks)
        if len(self.items) >= HOLD_MAX:
            self._schedule_now()
        elif tasks and self._awaited(tasks):
            self._schedule_now(everything=False)
        else:
            self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.conn.call_later(HOLD, lambda: self.flush(everything=False))

    def _schedule_now(self, everything: bool = True) -> None:
        """A flush at the connection's next turn, not in this callback: pika then dispatches
        the deliveries that came meanwhile (results first: their channel is older) before
        another RECORDS_PER_WRITE records, instead of after every record held. Without
        `everything`, only the groups of records that status updates await are written
        whole; the others keep waiting for their results."""
        self.everything = self.everything or everything
        if not self.urgent:
            self.urgent = True
            self.conn.call_later(0, lambda: self.flush(everything=self.everything))

    def flush_all(self) -> None:
        """Record every record held (the consumer stops)."""
        while any(len(d.written) < len(d.tasks) for d in self.items):
            self.flush()

    def flush(self, everything: bool = True) -> None:
        """Record what is held, at most RECORDS_PER_WRITE records (more are left for the next
        turn); with `everything` False (the timer) records whose results have not come yet
        wait on until they are RECORD_HOLD old (results whose records have not come always
        do)."""
        self.scheduled = self.urgent = self.everything = False
        budget = RECORDS_PER_WRITE
        items, self.items = self.items, []
        if not items:
            return
        db, now = self.consumer.db, time.monotonic()
        results: dict[str, dict[str, wire.ResultMessage]] = defaultdict(dict)
        awaited = self._awaited_ids()  # their status updates go between record and result
        for d in items:  # by endpoint (the routing key of a results message)
            results[d.endpoint_id].update((r.task_id, r) for r in d.waiting()
                                          if r.task_id not in awaited)
        written: set[str] = set()
        failed: set[int] = set()
        merged: set[str] = set()
        by_group: dict[tuple[str, str], list[_Delivery]] = defaultdict(list)
        for d in items:
            if d.tasks:
                by_group[(d.endpoint_id, str(d.tasks[0].task_group_id))].append(d)
        for (endpoint_id, group_id), ds in by_group.items():
            ours = results.get(endpoint_id, {})
            awaited_here = bool(awaited) and any(
                m.task_id in awaited and m.task_id not in d.written for d in ds for m in d.tasks)
            now_due = _due_in_order(ds, ours, everything or awaited_here, now, budget)
            msgs = [m for d in ds for m in now_due[id(d)]]
            if not msgs:
                continue
            budget -= len(msgs)
            arrived = {m.task_id: d.arrived for d in ds for m in now_due[id(d)]}
            try:
                merged |= direct.record(db, endpoint_id, group_id, msgs, ours, arrived)
            except ValueError as e:
                for d in ds:
                    _reject(d.channel, d.method, d.props, d.body, e)
                    failed.add(d.method.delivery_tag)
                    self.unwritten.difference_update(m.task_id for m in d.tasks)
                continue
            for d in ds:
                d.written.update(m.task_id for m in now_due[id(d)])
            written.update(m.task_id for m in msgs)
        self.unwritten -= written
        if written & awaited:
            self._apply_statuses(written)
        by_endpoint: dict[str, list[wire.ResultMessage]] = defaultdict(list)
        for d in items:
            by_endpoint[d.endpoint_id] += [r for r in d.waiting()
                                                  if r.task_id not in merged]
        unknown: set[str] = set()
        for endpoint_id, rs in by_endpoint.items():
            if rs:
                left: list[str] = []
                tasks.record_results(db, endpoint_id, rs, left)
                unknown.update(left)
        for d in items:
            if d.method.delivery_tag in failed:
                continue
            d.recorded.update(r.task_id for r in d.results if r.task_id not in unknown)
            late = d.waiting()
            # A result whose record has not come yet waits for it even when another message
            # flushes (an endpoint's heartbeat on a busy broker): it would be deferred anyway.
            if len(d.written) < len(d.tasks) or (late and not d.due(now)):
                self.items.append(d)  # records waiting for their results, or the reverse
            elif late:
                self.retry_later(d.channel, d.endpoint_id, d.method, late, forwarded=True)
            else:
                d.channel.basic_ack(d.method.delivery_tag)
        if budget <= 0:
            self._schedule_now()  # records were due, the write's share ran out
        elif self.items:
            self._schedule()

    def retry_later(self, channel: BlockingChannel, endpoint_id: str, method: Basic.Deliver,
                    results: list[wire.ResultMessage], forwarded: bool) -> None:
        """Results whose tasks are not recorded yet (a direct-path task's record and result
        travel separately): record them once more after UNKNOWN_RETRY. Tasks still unknown
        then are recorded from what the endpoint's results carry (their Executor's records
        never came); results without that are ignored."""
        def retry() -> None:
            db = self.consumer.db
            left: list[str] = []
            recorded = tasks.record_results(db, endpoint_id, results, left)
            if left:
                rest = _of(results, left)
                if direct.record_from_results(db, endpoint_id, rest):
                    left = []
                    recorded += tasks.record_results(db, endpoint_id, rest, left)
            if not forwarded:
                forward_results(self.fwd, recorded, self.consumer.amqp_user)
            for task_id in left:
                _DROPPED.note(f"a result for unknown task {task_id} from endpoint "
                              f"{endpoint_id}")

        self._later(channel, method, retry)

    def await_records(self, channel: BlockingChannel, endpoint_id: str,
                      method: Basic.Deliver, updates: list[wire.StatusUpdate]) -> None:
        """Status updates for tasks not recorded yet (the Executor's records of direct-path
        tasks come batched, and a record is held for its result): applied as soon as their
        records are written, which is now for records held here; the message is acked then.
        Those still unknown after UNKNOWN_RETRY are applied once more and then dropped (the
        result still records the task's end)."""
        wait = _Statuses(channel, endpoint_id, method, updates)
        self.statuses.append(wait)
        if any(u.task_id in self.unwritten for u in updates):
            self._schedule_now(everything=False)
        self.conn.call_later(UNKNOWN_RETRY, lambda: self._give_up(wait))

    def _awaited_ids(self) -> set[str]:
        """Tasks with status updates waiting for their records."""
        return {u.task_id for w in self.statuses for u in w.updates}

    def _awaited(self, msgs: list[wire.TaskMessage]) -> bool:
        if not self.statuses:
            return False
        awaited = self._awaited_ids()
        return any(m.task_id in awaited for m in msgs)

    def _apply_statuses(self, written: set[str]) -> None:
        """Apply the waiting status updates of the tasks whose records were just written;
        ack each message once all of its updates are applied."""
        for wait in list(self.statuses):
            if not any(u.task_id in written for u in wait.updates):
                continue
            left: list[str] = []
            tasks.apply_status(self.consumer.db, wait.endpoint_id, wait.updates, left)
            wait.updates = _of(wait.updates, left)
            if not wait.updates:
                self._done(wait)

    def _give_up(self, wait: _Statuses, deferred: bool = False) -> None:
        """Apply what is still waiting once more and ack it, unless its record is held here
        (its write's turn comes: wait on) or deliveries may be pending (pika runs timers
        before them: one more turn first)."""
        if wait not in self.statuses:
            return
        if any(u.task_id in self.unwritten for u in wait.updates):
            self._schedule_now(everything=False)
            self.conn.call_later(HOLD, lambda: self._give_up(wait))
        elif not deferred:
            self.conn.call_later(0, lambda: self._give_up(wait, deferred=True))
        else:
            tasks.apply_status(self.consumer.db, wait.endpoint_id, wait.updates)
            self._done(wait)

    def _done(self, wait: _Statuses) -> None:
        self.statuses.remove(wait)
        wait.channel.basic_ack(wait.method.delivery_tag)

    def _later(self, channel: BlockingChannel, method: Basic.Deliver,
               apply: Callable[[], Any]) -> None:
        """After UNKNOWN_RETRY: record what is held (it came first), `apply`, then ack the
        message (unacked until then: a broker that stops meanwhile gets it again)."""
        def run() -> None:
            self.flush()
            apply()
            channel.basic_ack(method.delivery_tag)

        self.conn.call_later(UNKNOWN_RETRY, run)


def _due_in_order(ds: list[_Delivery], results: dict[str, wire.ResultMessage],
                  everything: bool, now: float, budget: int
                  ) -> dict[int, list[wire.TaskMessage]]:
    """The held records of one group to write now, per delivery: those with their result
    here, or held RECORD_HOLD, or all with `everything`, but only up to the first that must
    wait on, so a group's tasks are recorded (and listed) in the order they were sent; at
    most `budget` of them."""
    due: dict[int, list[wire.TaskMessage]] = {}
    blocked = False
    for d in ds:
        due[id(d)] = []
        for m in d.tasks:
            if m.task_id in d.written:
                continue
            blocked = blocked or budget <= 0 or not (everything or d.due(now)
                                                     or m.task_id in results)
            budget -= 1
            if blocked:
                break
            due[id(d)].append(m)
    return due


def _gc_notice(method: Basic.Deliver, props: pika.BasicProperties) -> bool:
    """Is this an official endpoint's failure notice? Its code publishes it with the child's
    account but without properties, so no `user_id` vouches for it; the routing key does:
    every endpoint account's topic permission on the results exchange is its own id alone."""
    return (method.exchange == wire.RESULTS_EXCHANGE and props.type is None
            and props.user_id is None)


def _sender(method: Basic.Deliver) -> str:
    """The endpoint a message is from (or, a record, to): its routing key without the suffix
    of the direct path's bookkeeping (each party's topic permission covers only its own)."""
    key = method.routing_key
    if method.exchange == wire.SUBMIT_EXCHANGE:
        return key.removesuffix(wire.RECORDS_SUFFIX)
    return key.removesuffix(wire.FORWARDED_SUFFIX)


def _forwarded(props: pika.BasicProperties) -> bool:
    """Did the endpoint already put this message's results in their groups' queues?"""
    return bool((props.headers or {}).get(wire.FORWARDED_HEADER))
