"""Raw pika playing an endpoint, for tests that need a result without running an endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pika

from fnrelay import wire

#: A message as an endpoint sends it: (kind, body, headers).
Message = tuple[str, bytes, "dict[str, object] | None"]


def result_message(task_id: str, group: str, result: str, forwarded: bool = False) -> Message:
    """A task's success as its endpoint reports it. `forwarded`: as the copy of a direct-path
    result the endpoint already put in its group's queue."""
    return (wire.MSG_RESULTS, wire.encode_results(
        [wire.ResultMessage(task_id=task_id, status="success", result=result,
                                task_group_id=group)]),
            {wire.FORWARDED_HEADER: True} if forwarded else None)


def status_message(task_id: str, status: str, detail: str) -> Message:
    """A status update for a task as its endpoint reports it."""
    return (wire.MSG_STATUS, wire.encode_status(
        [wire.StatusUpdate(task_id=task_id, status=status, detail=detail)]), None)


@contextlib.contextmanager
def connected(url: str, endpoint_id: str) -> Iterator[Callable[[Message], None]]:
    """send(message) as endpoint `endpoint_id` on one connection opened beforehand: routing
    key = endpoint id, confirmed, `user_id` = the connecting account (RabbitMQ checks it)."""
    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.confirm_delivery()

        def send(message: Message) -> None:
            kind, body, headers = message
            ch.basic_publish(wire.RESULTS_EXCHANGE, endpoint_id, body, pika.BasicProperties(
                type=kind, delivery_mode=2, user_id=params.credentials.username,
                headers=headers))

        yield send
    finally:
        if conn.is_open:
            conn.close()


def send_result(url: str, endpoint_id: str, task_id: str, group: str, result: str,
                forwarded: bool = False) -> None:
    """Publish a task's success as its endpoint would (see result_message)."""
    with connected(url, endpoint_id) as send:
        send(result_message(task_id, group, result, forwarded))


def send_status(url: str, endpoint_id: str, task_id: str, status: str, detail: str) -> None:
    """Publish a status update for a task as its endpoint would."""
    with connected(url, endpoint_id) as send:
        send(status_message(task_id, status, detail))
