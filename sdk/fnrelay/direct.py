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
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pika
import pika.exceptions

from fnrelay import protocol
from fnrelay.amqp import connection_parameters

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
                  task_group_id: str) -> list[protocol.TaskMessage]:
    """The endpoint's view of submit entries (`fnrelay.client.task_entry`)."""
    return [
        protocol.TaskMessage(
            task_id=tid, function_id=e["function_id"], function=body, payload=e["payload"],
            task_group_id=task_group_id,
            resource_specification=e.get("resource_specification") or {},
            user_endpoint_config=e.get("user_endpoint_config") or {},
            max_retries=e.get("max_retries"), direct=True,
        )
        for e, tid, body in zip(entries, task_ids, bodies, strict=True)
    ]


class Records:
    """Direct-path tasks published to the endpoint whose records the broker has not been sent:
    one message per RECORDS_LINGER for all of them costs RabbitMQ and the broker far less than
    a second copy of every task message (docs/performance.md, round 5)."""

    def __init__(self) -> None:
        self.tasks: list[protocol.TaskMessage] = []
        self.size = 0
        self.due = 0.0

    def add(self, tasks: list[protocol.TaskMessage]) -> None:
        if not self.tasks:
            self.due = time.monotonic() + RECORDS_LINGER
        self.tasks.extend(tasks)
        self.size += sum(len(t.payload) + len(t.function) for t in tasks)

    def ready(self) -> bool:
        """Is it time to send them?"""
        return bool(self.tasks) and (self.size >= RECORDS_MAX_BYTES
                                     or time.monotonic() >= self.due)

    def wait(self, idle: float) -> float:
        """How long the submitter may wait for new work before these are due."""
        if not self.tasks:
            return idle
        return max(0.0, min(idle, self.due - time.monotonic()))

    def take(self) -> list[protocol.TaskMessage]:
        tasks, self.tasks, self.size = self.tasks, [], 0
        return tasks


class DirectPublisher:
    """One confirmed-publish connection as the task group's account (one thread uses it)."""

    def __init__(self, exchange: str, routing_key: str):
        self.exchange, self.routing_key = exchange, routing_key
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._user: str | None = None

    def publish(self, amqp_url: str, body: bytes, records: bool = False) -> None:
        """Publish one `tasks` message (with `records`: the broker's records of tasks already
        published) and wait for RabbitMQ's confirm; on a lost connection publish it again (same
        task ids) a few times. DirectUnavailable when it cannot."""
        routing_key = self.routing_key + (protocol.RECORDS_SUFFIX if records else "")
        sent = False
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
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
                    self.exchange, routing_key, body,
                    pika.BasicProperties(content_type=protocol.CONTENT_TYPE, delivery_mode=2,
                                         type=protocol.MSG_TASKS, user_id=self._user),
                    mandatory=True)
                return
            except pika.exceptions.ChannelClosedByBroker as e:  # refused (403): no retry
                self.close()
                raise DirectUnavailable(f"RabbitMQ refused the publish: {e}", sent) from e
            except (pika.exceptions.AMQPError, OSError) as e:
                log.info("direct publish not confirmed (%r); trying again", e)
                self.close()
        raise DirectUnavailable("RabbitMQ did not confirm the tasks", sent)

    def service(self) -> None:
        """Answer RabbitMQ's heartbeats while idle (call every few seconds)."""
        if self._conn is None:
            return
        try:
            self._conn.process_data_events(time_limit=0)
        except (pika.exceptions.AMQPError, OSError):
            self.close()

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    def _connect(self, amqp_url: str) -> None:
        if self._conn is not None and self._conn.is_open:
            return
        params = connection_parameters(amqp_url, "fnrelay-executor")
        params.socket_timeout = 5
        params.connection_attempts = 1
        params.blocked_connection_timeout = 30
        self._conn = pika.BlockingConnection(params)
        self._channel = self._conn.channel()
        self._channel.confirm_delivery()
        self._user = params.credentials.username
