"""The endpoint's result publisher: one thread and one AMQP connection of its own.

pika's BlockingChannel waits for each publisher confirm, and RabbitMQ confirms a persistent
message only once it is on disk (a millisecond or more here). On the agent's I/O thread those
waits held up the next task's arrival; here they overlap with it, and whatever results pile up
meanwhile go out together in the next message. (Direct-path results reach their task group
before this: the agent publishes those itself, as transient messages, whose confirms are
quick; see Agent._to_groups and GroupSender.)

The journal stays the I/O thread's alone: this thread reports what RabbitMQ confirmed through
`published` (a thread-safe queue) and the agent marks it in the journal. A result confirmed but
not yet marked when the endpoint stops is published again at the next start, which the broker
and the Executor ignore.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from fnrelay import wire
from fnrelay.amqp import parameter_list, process_events
from fnrelay.wire import ResultMessage

log = logging.getLogger(__name__)

BATCH = 256  # results per message
#: Seconds results that already reached their task groups wait for company: nobody waits for
#: the broker's copy, so one message (one disk write at RabbitMQ, one wake-up of the broker)
#: per LINGER rather than per task, which lone calls in a row feel as CPU taken from them.
LINGER = 0.05
#: Seconds between services of an idle connection (RabbitMQ's heartbeats).
SERVICE = 5.0
#: Seconds a GroupSender publish may be held up by RabbitMQ's flow control before it fails.
BLOCKED_TIMEOUT = 10.0


@dataclass
class Batch:
    """Results to publish to the broker; `forwarded`: ids already in their groups' queues."""

    results: list[ResultMessage]
    forwarded: set[str] = field(default_factory=set)


class ResultPublisher(threading.Thread):
    """Publishes handed-over results to the broker, persistent and confirmed."""

    def __init__(self, amqp_url: str, endpoint_id: str, on_refused: Callable[[], None],
                 forwarded_key: str | None = None):
        super().__init__(name="fnrelay-result-publisher", daemon=True)
        self.amqp_url, self.endpoint_id, self.on_refused = amqp_url, endpoint_id, on_refused
        #: Routing key of results already in their groups' queues (the broker's registration
        #: answer names it; older brokers do not: then the endpoint's id).
        self.forwarded_key = forwarded_key or endpoint_id
        self._todo: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        #: Task ids whose results RabbitMQ confirmed (the agent marks them in the journal).
        self.published: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._channel: Any = None
        self._user: str | None = None
        self.failed = threading.Event()  # the connection broke: the agent's session ends

    def send(self, batch: Batch) -> None:
        self._todo.put(batch)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what was handed over, then end."""
        self._todo.put(None)
        self.join(timeout)

    def run(self) -> None:
        params = parameter_list(self.amqp_url, "fnrelay-endpoint-results")
        try:
            conn = pika.BlockingConnection(params)
        except (pika.exceptions.AMQPError, OSError) as e:
            log.warning("result publisher cannot connect: %r", e)
            self.failed.set()
            return
        try:
            self._channel = conn.channel()
            self._channel.confirm_delivery()
            self._user = params[0].credentials.username
            while self._serve_once():
                pass
        except (pika.exceptions.AMQPError, OSError) as e:
            log.warning("result publisher lost its connection: %r", e)
            self.failed.set()
        finally:
            try:
                if conn.is_open:
                    conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    def _serve_once(self) -> bool:
        """Publish everything handed over so far; False once stopped."""
        batches = self._take()
        stop = None in batches
        results = [r for b in batches if b is not None for r in b.results]
        forwarded = {i for b in batches if b is not None for i in b.forwarded}
        for i in range(0, len(results), BATCH):
            chunk = results[i : i + BATCH]
            # All of them already went to their groups: the broker records without forwarding.
            done = all(r.task_id in forwarded for r in chunk)
            try:
                self._publish(wire.RESULTS_EXCHANGE,
                              self.forwarded_key if done else self.endpoint_id,
                              wire.encode_results(chunk),
                              {wire.FORWARDED_HEADER: True} if done else None)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
                log.warning("RabbitMQ did not take %d result(s) (%s); retrying in 5 s",
                            len(chunk), type(e).__name__)
                self.on_refused()
                continue
            self.published.put([r.task_id for r in chunk])
            log.debug("published %d result(s)", len(chunk))
        return not stop

    def _take(self) -> list[Batch | None]:
        """The batches handed over so far (waiting for the first, answering heartbeats
        meanwhile); direct-path-only results linger up to LINGER for more."""
        while True:
            try:
                batches = [self._todo.get(timeout=SERVICE)]
                break
            except queue.Empty:
                process_events(self._channel.connection, 0)
        deadline = time.monotonic() + LINGER
        while True:
            try:
                batches.append(self._todo.get_nowait())
                continue
            except queue.Empty:
                pass
            if not _may_linger(batches):
                return batches
            left = deadline - time.monotonic()
            if left <= 0:
                return batches
            try:
                batches.append(self._todo.get(timeout=left))
            except queue.Empty:
                return batches

    def _publish(self, exchange: str, key: str, body: bytes,
                 headers: dict[str, Any] | None = None) -> None:
        self._channel.basic_publish(
            exchange, key, body,
            pika.BasicProperties(content_type=wire.CONTENT_TYPE, delivery_mode=2,
                                 type=wire.MSG_RESULTS, user_id=self._user,
                                 headers=headers),
            mandatory=True)


def _may_linger(batches: list[Batch | None]) -> bool:
    """Only results every Executor already has, and not too many, may wait."""
    if None in batches:
        return False
    n = 0
    for b in batches:
        assert b is not None
        n += len(b.results)
        if any(r.task_id not in b.forwarded for r in b.results):
            return False
    return n < BATCH


def publish_to_group(channel: Any, user: str | None, endpoint_id: str, group_id: str,
                     results: Sequence[ResultMessage]) -> bool:
    """Publish direct-path results to their task group's queue, transient and confirmed; False
    if the queue did not take them (the broker then forwards its copy). The routing key names
    this endpoint: only a group that granted it the direct path is bound to it."""
    try:
        channel.basic_publish(
            wire.GROUPS_EXCHANGE, wire.group_routing_key(group_id, endpoint_id),
            wire.encode_results(results),
            pika.BasicProperties(content_type=wire.CONTENT_TYPE, delivery_mode=1,
                                 type=wire.MSG_RESULTS, user_id=user),
            mandatory=True)
    except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
        log.info("task group %s's queue did not take %d result(s) (%s); the broker forwards "
                 "them", group_id, len(results), type(e).__name__)
        return False
    return True


class GroupSender:
    """Publishes a lone direct-path result to its task group from the engine thread that got
    it, over a connection of its own (behind a lock): waking the agent's I/O thread first was
    a thread switch on every lone call's way back. It only takes what nobody else is sending
    (`try_send` never waits for the lock); everything else goes the batched way."""

    def __init__(self, amqp_url: str, endpoint_id: str):
        self._endpoint_id = endpoint_id
        # An engine thread must not hang on RabbitMQ's flow control (a resource alarm): its
        # publish fails after this, and results take the batched way.
        params = parameter_list(amqp_url, "fnrelay-endpoint-groups",
                                blocked_connection_timeout=BLOCKED_TIMEOUT)
        self._lock = threading.Lock()
        self._conn: Any = pika.BlockingConnection(params)
        self._channel: Any = self._conn.channel()
        self._channel.confirm_delivery()
        self._user = params[0].credentials.username

    def try_send(self, group_id: str, result: ResultMessage) -> bool:
        """True if the group's queue took the result; False if it did not, the sender was
        busy, or its connection broke (the agent then publishes the result itself)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._channel is None:
                return False
            return publish_to_group(self._channel, self._user, self._endpoint_id, group_id,
                                    [result])
        except Exception as e:  # noqa: BLE001 - on an engine thread: the result must go on
            log.warning("the group result sender lost its connection (%r); results go the "
                        "batched way", e)
            self._drop()
            return False
        finally:
            self._lock.release()

    def service(self) -> None:
        """Answer RabbitMQ's heartbeats (the agent's I/O thread calls this every few seconds;
        it never waits: a sender busy publishing services the connection itself)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._conn is not None:
                process_events(self._conn, 0)
        except (pika.exceptions.AMQPError, OSError):
            self._drop()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            conn = self._conn
            self._drop()
        try:
            if conn is not None and conn.is_open:
                conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass

    def _drop(self) -> None:
        self._conn = self._channel = None
