"""Raw pika playing an endpoint, for tests that need a result without running an endpoint."""

from __future__ import annotations

import pika

from fnrelay import protocol


def send_result(url: str, endpoint_id: str, task_id: str, group: str, result: str,
                forwarded: bool = False) -> None:
    """Publish a task's success as its endpoint would: routing key = endpoint id, confirmed,
    `user_id` = the connecting account (RabbitMQ checks it). `forwarded`: as the copy of a
    direct-path result the endpoint already put in its group's queue."""
    _send(url, endpoint_id, protocol.MSG_RESULTS, protocol.encode_results(
        [protocol.ResultMessage(task_id=task_id, status="success", result=result,
                                task_group_id=group)]),
          {protocol.FORWARDED_HEADER: True} if forwarded else None)


def send_status(url: str, endpoint_id: str, task_id: str, status: str, detail: str) -> None:
    """Publish a status update for a task as its endpoint would."""
    _send(url, endpoint_id, protocol.MSG_STATUS, protocol.encode_status(
        [protocol.StatusUpdate(task_id=task_id, status=status, detail=detail)]))


def _send(url: str, endpoint_id: str, kind: str, body: bytes,
          headers: dict[str, object] | None = None) -> None:
    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(protocol.RESULTS_EXCHANGE, endpoint_id, body, pika.BasicProperties(
            type=kind, delivery_mode=2, user_id=params.credentials.username, headers=headers))
    finally:
        conn.close()
