"""The direct path: an Executor publishing its tasks straight to its endpoint's queue.

The broker grants it per task group (``Client.create_task_group(..., endpoint_id=...)``) for
an endpoint the user owns: the group's RabbitMQ account may then publish to
``fnrelay.submit`` with that endpoint's id as routing key, and RabbitMQ delivers each message
to the endpoint. The broker's records of the tasks follow while they run (`Records`): many
tasks per message, at most RECORDS_LINGER later, routing key = endpoint id + ".records". Results
come back the same way, straight from the endpoint's account to the group's queue. No HTTP
request and no database commit lie on a task's way there and back, and RabbitMQ stores each
task once. Should the records never arrive (the Executor died first), the endpoint's copy of
each result for the broker carries what the broker needs to record the task.

Task ids are made here (UUIDs); the endpoint and the broker both ignore a task id they have
seen, so a message whose confirm was lost can be published again safely.

The broker's payload limit holds here as over REST (the grant's ``payload_limit``): a task whose
REST request alone would exceed it fails with PayloadTooLargeError, and no message of several
tasks exceeds it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pika
import pika.exceptions

from fnrelay import chunks, errors, wire
from fnrelay.amqp import parameter_list, process_events

log = logging.getLogger(__name__)

#: Delays (seconds) before publishing an unconfirmed message again on a new connection.
RETRY_DELAYS = (0.2, 1.0, 3.0)
#: The broker's records of direct-path tasks wait up to this long (seconds) to share a message.
RECORDS_LINGER = 0.05
#: ... or until they hold this many bytes of code and arguments.
RECORDS_MAX_BYTES = 4_000_000


class DirectUnavailable(Exception):
    """The direct path cannot take this message; ``sent`` says whether it may have gone out
    (then its tasks may run even if they are submitted again another way)."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


def task_messages(entries: list[dict[str, Any]], task_ids: list[str], bodies: list[str],
                  task_group_id: str) -> list[wire.TaskMessage]:
    """The endpoint's view of submit entries (`fnrelay.client.task_entry`)."""
    return [wire.task_from_entry(tid, e, body, task_group_id, direct=True)
            for e, tid, body in zip(entries, task_ids, bodies, strict=True)]


def _mb(n: int) -> str:
    return f"{n} bytes ({n / 1_000_000:.1f} MB)"


def too_large(size: int, limit: int) -> errors.PayloadTooLargeError:
    """What REST answers (413) for a task whose submission is `size` bytes."""
    return errors.PayloadTooLargeError(
        f"this task's submission of {_mb(size)} (its REST request alone) exceeds the broker's "
        f"payload limit of {_mb(limit)}; it was not sent: pass smaller arguments",
        http_status=413, code="PAYLOAD_TOO_LARGE")


def within_at_once(message_bytes: int, envelope_bytes: int, limit: int) -> bool:
    """Can neither this `tasks` message nor the REST request of any one of its tasks (the
    submit body's `envelope_bytes` without tasks, plus the task) exceed `limit`? A task's REST
    entry is part of its message (same keys, same values), and REST's JSON (with spaces) is at
    most twice as long as the message's (without): then no task needs measuring."""
    return envelope_bytes + 2 * message_bytes <= limit


def message_runs(tasks: list[wire.TaskMessage], limit: int) -> list[slice]:
    """Consecutive runs of tasks whose `tasks` message stays within `limit` bytes. A task whose
    message alone is larger (by its code: its REST request fits) goes alone, as the broker
    would send it to the endpoint after a REST submit."""
    sizes = [len(wire.encode(t)) + 1 for t in tasks]  # each with its separating comma
    return chunks.by_size(sizes, limit - len(wire.encode_tasks([])) + 1)


class Records:
    """Direct-path tasks published to the endpoint whose records the broker has not been sent:
    one message per RECORDS_LINGER for all of them costs RabbitMQ and the broker far less than
    a second copy of every task message (docs/performance.md, round 5). Thread-safe: the
    publish lanes add what RabbitMQ confirmed while the submitter takes (fnrelay.executor.lanes).
    """

    def __init__(self) -> None:
        self.tasks: list[wire.TaskMessage] = []
        self.size = 0
        self.due = 0.0
        self._lock = threading.Lock()

    def add(self, tasks: list[wire.TaskMessage]) -> None:
        with self._lock:
            if not self.tasks:
                self.due = time.monotonic() + RECORDS_LINGER
            self.tasks.extend(tasks)
            self.size += sum(len(t.payload) + len(t.function) for t in tasks)

    def ready(self) -> bool:
        """Is it time to send them?"""
        with self._lock:
            return bool(self.tasks) and (self.size >= RECORDS_MAX_BYTES
                                         or time.monotonic() >= self.due)

    def wait(self, idle: float) -> float:
        """How long the submitter may wait for new work before these are due."""
        with self._lock:
            if not self.tasks:
                return idle
            return max(0.0, min(idle, self.due - time.monotonic()))

    def take(self) -> list[wire.TaskMessage]:
        with self._lock:
            tasks, self.tasks, self.size = self.tasks, [], 0
            return tasks


class DirectPublisher:
    """One confirmed-publish connection as the task group's account (one thread at a time
    uses it)."""

    def __init__(self, exchange: str, routing_key: str):
        self.exchange, self.routing_key = exchange, routing_key
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None  # confirmed: the tasks
        self._records_channel: Any = None  # unconfirmed: the broker's records of them
        self._user: str | None = None

    def connect(self, amqp_url: str) -> None:
        """Open the connection and its confirmed channel ahead of the first publish;
        DirectUnavailable if RabbitMQ cannot be reached (the first publish tries again)."""
        try:
            self._connect(amqp_url)
        except (pika.exceptions.AMQPError, OSError) as e:
            self.close()
            raise DirectUnavailable(f"cannot connect to RabbitMQ: {e!r}", False) from e

    def publish(self, amqp_url: str, body: bytes, records: bool = False) -> None:
        """Publish one `tasks` message and wait for RabbitMQ's confirm; on a lost connection
        publish it again (same task ids) a few times. With `records` (the broker's records of
        tasks already published) it is sent unconfirmed (`_publish_records`).
        DirectUnavailable when it cannot."""
        if records:
            self._publish_records(amqp_url, body)
            return
        sent = False
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:  # not sleep(0) on the first try: it hands the GIL away on every publish
                time.sleep(delay)
            try:
                self._connect(amqp_url)
            except (pika.exceptions.AMQPError, OSError) as e:
                if attempt == len(RETRY_DELAYS):
                    raise DirectUnavailable(f"cannot connect to RabbitMQ: {e!r}", sent) from e
                continue
            try:
                sent = True
                self._channel.basic_publish(
                    self.exchange, self.routing_key, body,
                    pika.BasicProperties(content_type=wire.CONTENT_TYPE, delivery_mode=2,
                                         type=wire.MSG_TASKS, user_id=self._user),
                    mandatory=True)
                return
            except pika.exceptions.ChannelClosedByBroker as e:  # refused (403): no retry
                self.close()
                raise DirectUnavailable(f"RabbitMQ refused the publish: {e}", sent) from e
            except (pika.exceptions.AMQPError, OSError) as e:
                log.info("direct publish not confirmed (%r); trying again", e)
                self.close()
        raise DirectUnavailable("RabbitMQ did not confirm the tasks", sent)

    def _publish_records(self, amqp_url: str, body: bytes) -> None:
        """Publish the broker's records on a channel without confirms: nothing waits for them
        (should they be lost, the endpoint's copies of the results carry them), so the next
        tasks do not wait a round trip to RabbitMQ behind them."""
        try:
            self._connect(amqp_url)
            if self._records_channel is None:  # opened here: not on a first task's way
                self._records_channel = self._conn.channel()  # type: ignore[union-attr]
            self._records_channel.basic_publish(
                self.exchange, self.routing_key + wire.RECORDS_SUFFIX, body,
                pika.BasicProperties(content_type=wire.CONTENT_TYPE, delivery_mode=2,
                                     type=wire.MSG_TASKS, user_id=self._user))
        except (pika.exceptions.AMQPError, OSError) as e:
            self.close()
            raise DirectUnavailable(f"cannot publish to RabbitMQ: {e!r}", True) from e

    def service(self) -> None:
        """Answer RabbitMQ's heartbeats while idle (call every few seconds)."""
        if self._conn is None:
            return
        try:
            process_events(self._conn, 0)
        except (pika.exceptions.AMQPError, OSError):
            self.close()

    def close(self) -> None:
        conn, self._conn, self._channel, self._records_channel = self._conn, None, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    def _connect(self, amqp_url: str) -> None:
        if self._conn is not None and self._conn.is_open:
            return
        params = parameter_list(amqp_url, "fnrelay-executor", socket_timeout=5,
                                connection_attempts=1, blocked_connection_timeout=30)
        self._conn = pika.BlockingConnection(params)
        self._channel = self._conn.channel()
        self._channel.confirm_delivery()
        self._user = params[0].credentials.username
