"""A real endpoint handed a malformed or truncated task message moves it to the dead-letter
queue with the reason and keeps running tasks.

Fixtures (tests/conftest.py): ``client`` (alice), ``make_endpoint``, ``amqp_url`` (the
administrator of the session broker's virtual host).
"""

from __future__ import annotations

import uuid

import pika

from fnrelay import Executor, protocol
from support.waiting import wait_for


def _dead_letter_with(amqp_url: str, body: bytes) -> dict | None:
    """The headers of `body` if it is in fnrelay.deadletter (others are put back)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        found, others = None, []
        while True:
            method, props, got = ch.basic_get(protocol.DEADLETTER_QUEUE)
            if method is None:
                break
            if got == body:
                found = props.headers or {}
                ch.basic_ack(method.delivery_tag)
            else:
                others.append(method.delivery_tag)
        for tag in others:
            ch.basic_nack(tag, requeue=True)
        return found
    finally:
        conn.close()


def test_endpoint_dead_letters_a_truncated_task_message(client, make_endpoint, amqp_url):
    ep = make_endpoint("deadletter")
    whole = protocol.encode_tasks([protocol.TaskMessage(
        task_id=str(uuid.uuid4()), function_id=str(uuid.uuid4()), function="f", payload="p")])
    truncated = whole[: len(whole) // 2]
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(protocol.TASKS_EXCHANGE, ep.endpoint_id, truncated,
                         pika.BasicProperties(type=protocol.MSG_TASKS, delivery_mode=2))
    finally:
        conn.close()
    headers = wait_for(lambda: _dead_letter_with(amqp_url, truncated),
                       "the truncated message in fnrelay.deadletter")
    assert "malformed" in headers[protocol.DEADLETTER_REASON_HEADER]
    assert headers["x-fnrelay-routing-key"] == ep.endpoint_id
    with Executor(ep.endpoint_id, client=client) as ex:  # the endpoint still runs tasks
        assert ex.submit(pow, 2, 5).result(timeout=120) == 32
