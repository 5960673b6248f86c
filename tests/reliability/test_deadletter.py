"""A real endpoint handed a malformed task message (truncated, or a field of the wrong type)
moves it to the dead-letter queue with the reason and keeps running tasks.

Fixtures (tests/conftest.py): ``client`` (alice), ``make_endpoint``, ``amqp_url`` (the
administrator of the session broker's virtual host).
"""

from __future__ import annotations

import json
import uuid

import pika
import pytest

from fnrelay import Executor, wire
from support.waiting import wait_for


def _dead_letter_with(amqp_url: str, body: bytes) -> dict | None:
    """The headers of `body` if it is in fnrelay.deadletter (others are put back)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        found, others = None, []
        while True:
            method, props, got = ch.basic_get(wire.DEADLETTER_QUEUE)
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


def _whole() -> bytes:
    return wire.encode_tasks([wire.TaskMessage(
        task_id=str(uuid.uuid4()), function_id=str(uuid.uuid4()), function="f", payload="p")])


def _with(**fields: object) -> bytes:
    """A well-formed task message but for `fields` (what a hand-made client could send)."""
    doc = json.loads(_whole())
    doc["tasks"][0].update(fields)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("bad", [
    pytest.param(lambda: _whole()[: len(_whole()) // 2], id="truncated"),
    # A list as spec reached the local engine, whose worker thread died on it: the task never
    # ended and the message came back after every restart. Other fields of the wrong type
    # are refused by the same check.
    pytest.param(lambda: _with(resource_specification=["walltime", 5]), id="spec-a-list"),
    pytest.param(lambda: _with(max_retries="3"), id="retries-a-string"),
])
def test_endpoint_dead_letters_a_malformed_task_message(client, make_endpoint, amqp_url, bad):
    body = bad()
    ep = make_endpoint("deadletter")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(wire.TASKS_EXCHANGE, ep.endpoint_id, body,
                         pika.BasicProperties(type=wire.MSG_TASKS, delivery_mode=2))
    finally:
        conn.close()
    headers = wait_for(lambda: _dead_letter_with(amqp_url, body),
                       "the malformed message in fnrelay.deadletter")
    assert "malformed" in headers[wire.DEADLETTER_REASON_HEADER]
    assert headers["x-fnrelay-routing-key"] == ep.endpoint_id
    with Executor(ep.endpoint_id, client=client) as ex:  # the endpoint still runs tasks
        assert ex.submit(pow, 2, 5).result(timeout=120) == 32
