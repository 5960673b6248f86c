"""Small AMQP helpers: connection parameters, topology declarations, reconnect backoff.

pika is not thread-safe, so request handlers declare queues on a short-lived connection of
their own, while the publisher and consumer threads each keep one long-lived connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from fnrelay import wire
from fnrelay.amqp import parameter_list
from fnrelay_broker.queues import CLASSIC, QueueNames, legacy_endpoint_queue, queue_arguments

log = logging.getLogger(__name__)

LEGACY_GROUPS_EXCHANGE = "fnrelay.groups"


def parameters(url: str) -> list[pika.URLParameters]:
    """One parameter set per node of `url` (a comma-separated list: pika fails over)."""
    return parameter_list(url, "fnrelay-broker", connection_attempts=1, socket_timeout=5,
                          blocked_connection_timeout=30)


def queue_type_hint(error: BaseException) -> str:
    """What to do when a queue exists with another type than --queue-type (RabbitMQ: 406)."""
    if "x-queue-type" not in str(error):
        return ""
    return ("; the queue exists with another type than --queue-type: stop the broker, the "
            "endpoints and Executors and run `fnrelay-broker queues migrate` "
            "(docs/deployment.md)")


def declare_exchanges(channel: BlockingChannel, queue_type: str = CLASSIC) -> None:
    channel.exchange_declare(wire.TASKS_EXCHANGE, "topic", durable=True)
    channel.exchange_declare(wire.RESULTS_EXCHANGE, "topic", durable=True)
    channel.exchange_declare(wire.GROUPS_EXCHANGE, "topic", durable=True)
    # The direct exchange earlier brokers forwarded group results through: any endpoint
    # account could publish to every group by it.
    channel.exchange_delete(LEGACY_GROUPS_EXCHANGE)
    channel.exchange_declare(wire.SUBMIT_EXCHANGE, "topic", durable=True)
    # Direct-path tasks (routing key: one word, the endpoint id) reach the endpoints' queues
    # through the tasks exchange; their records ("<id>.records") do not. Brokers before
    # 2026-12 bound "#": that binding would hand the endpoints the records too.
    channel.exchange_unbind(wire.TASKS_EXCHANGE, wire.SUBMIT_EXCHANGE, routing_key="#")
    channel.exchange_bind(wire.TASKS_EXCHANGE, wire.SUBMIT_EXCHANGE, routing_key="*")
    channel.exchange_declare(wire.DEADLETTER_EXCHANGE, "fanout", durable=True)
    channel.queue_declare(wire.DEADLETTER_QUEUE, durable=True,
                          arguments=queue_arguments(queue_type))
    channel.queue_bind(wire.DEADLETTER_QUEUE, wire.DEADLETTER_EXCHANGE)


def declare_endpoint_queue(channel: BlockingChannel, names: QueueNames, endpoint_id: str) -> str:
    queue = names.endpoint(endpoint_id)
    channel.queue_declare(queue, durable=True, arguments=names.arguments())
    channel.queue_bind(queue, wire.TASKS_EXCHANGE, routing_key=endpoint_id)
    return queue


def declare_control_queue(channel: BlockingChannel, names: QueueNames, endpoint_id: str) -> str:
    """A multi-user manager's control queue (start-child messages)."""
    queue = names.control(endpoint_id)
    channel.queue_declare(queue, durable=True, arguments=names.arguments())
    channel.queue_bind(queue, wire.TASKS_EXCHANGE,
                       routing_key=wire.control_routing_key(endpoint_id))
    return queue


def declare_group_queue(channel: BlockingChannel, names: QueueNames, task_group_id: str,
                        expires_s: float, direct_endpoint: str | None = None) -> str:
    """A group's result queue, bound for the broker's results and, with `direct_endpoint`,
    for that endpoint's (the direct path's grant)."""
    queue = names.group(task_group_id)
    channel.queue_declare(queue, durable=True,
                          arguments=names.arguments(**{"x-expires": int(expires_s * 1000)}))
    channel.queue_bind(queue, wire.GROUPS_EXCHANGE,
                       routing_key=wire.group_routing_key(task_group_id))
    if direct_endpoint is not None:
        channel.queue_bind(queue, wire.GROUPS_EXCHANGE, routing_key=wire.
                           group_routing_key(task_group_id, direct_endpoint))
    return queue


def move_legacy_queue(channel: BlockingChannel, endpoint_id: str, queue: str) -> int:
    """Move the messages of the endpoint's queue under its old, guessable name into `queue`,
    then delete it; returns how many (-1 when there is no such queue). The channel must
    confirm publishes: each message is acked from the old queue only after the new one took
    it. The old queue is unbound first, so nothing arrives in it meanwhile."""
    legacy = legacy_endpoint_queue(endpoint_id)
    try:
        channel.queue_declare(legacy, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return -1  # no such queue (and this channel is closed)
    channel.queue_unbind(legacy, wire.TASKS_EXCHANGE, routing_key=endpoint_id)  # no more
    moved = 0
    while True:
        method, props, body = channel.basic_get(legacy)
        if method is None:
            break
        channel.basic_publish("", queue, body, props)
        channel.basic_ack(method.delivery_tag)
        moved += 1
    channel.queue_delete(legacy, if_empty=True)
    return moved


class Declarer:
    """Declares queues for request handlers, one short-lived connection per call."""

    def __init__(self, url: str, group_expires_s: float, names: QueueNames):
        self.url = url
        self.group_expires_s = group_expires_s
        self.names = names
        self._lock = threading.Lock()  # bounds connection churn under bursts

    def _run(self, fn: Callable[[BlockingChannel], Any]) -> bool:
        with self._lock:
            try:
                conn = pika.BlockingConnection(parameters(self.url))
            except Exception as e:  # noqa: BLE001 - AMQP down is expected and reported
                log.warning("RabbitMQ unreachable for a declaration: %s", e)
                return False
            try:
                ch = conn.channel()
                declare_exchanges(ch, self.names.queue_type)
                fn(ch)
                return True
            except Exception as e:  # noqa: BLE001
                log.warning("AMQP declaration failed: %s%s", e, queue_type_hint(e))
                return False
            finally:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    def endpoint_queue(self, endpoint_id: str) -> bool:
        """Declare an endpoint's queue, moving in what its queue under the old name held."""
        def declare(ch: BlockingChannel) -> None:
            queue = declare_endpoint_queue(ch, self.names, endpoint_id)
            legacy_ch = ch.connection.channel()
            legacy_ch.confirm_delivery()
            moved = move_legacy_queue(legacy_ch, endpoint_id, queue)
            if moved > 0:
                log.info("moved %d message(s) of endpoint %s into its new queue", moved,
                         endpoint_id)
        return self._run(declare)

    def control_queue(self, endpoint_id: str) -> bool:
        """A multi-user manager's control queue (its account may not declare it)."""
        return self._run(lambda ch: declare_control_queue(ch, self.names, endpoint_id))

    def group_queue(self, task_group_id: str, direct_endpoint: str | None = None) -> bool:
        return self._run(lambda ch: declare_group_queue(
            ch, self.names, task_group_id, self.group_expires_s, direct_endpoint))

    def gc_group_queue(self, queue: str, task_group_id: str) -> bool:
        """A Globus Compute group's result queue (`queue`: the owner's prefix + the group
        id), bound for the broker's results of its tasks in Globus Compute's format."""
        def declare(ch: BlockingChannel) -> None:
            ch.queue_declare(queue, durable=True, arguments=self.names.arguments(
                **{"x-expires": int(self.group_expires_s * 1000)}))
            ch.queue_bind(queue, wire.GROUPS_EXCHANGE,
                          routing_key=wire.gc_routing_key(task_group_id))
        return self._run(declare)

    def revoke_group_grant(self, task_group_id: str, endpoint_id: str) -> bool:
        """Unbind a group's queue from an endpoint's results (its grant is gone)."""
        return self._run(lambda ch: ch.queue_unbind(
            self.names.group(task_group_id), wire.GROUPS_EXCHANGE,
            routing_key=wire.group_routing_key(task_group_id, endpoint_id)))

    def delete_endpoint_queue(self, endpoint_id: str) -> bool:
        """Delete an endpoint's task queue and, had it one (a multi-user manager), its control
        queue (deleting a queue that does not exist is a no-op in RabbitMQ)."""
        def delete(ch: BlockingChannel) -> None:
            ch.queue_delete(self.names.endpoint(endpoint_id))
            ch.queue_delete(self.names.control(endpoint_id))
        return self._run(delete)
