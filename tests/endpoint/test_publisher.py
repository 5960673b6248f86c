"""The endpoint's result publisher against a real RabbitMQ: what goes out in which message."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pika
import pytest

from fnrelay import wire
from fnrelay.wire import ResultMessage
from fnrelay_endpoint.agent.publisher import Batch, GroupSender, ResultPublisher
from support.waiting import wait_for


def bound_queue(conn, exchange: str, kind: str, key: str) -> str:  # type: ignore[no-untyped-def]
    """A temporary queue getting what `exchange` routes with `key` (declared as the broker
    declares it)."""
    ch = conn.channel()
    ch.exchange_declare(exchange, kind, durable=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, exchange, routing_key=key)
    return q


@pytest.fixture
def results_queue(amqp_url: str) -> Iterator[tuple[str, str, pika.adapters.BlockingConnection]]:
    """(endpoint id, queue) where the broker would get this endpoint's results."""
    endpoint_id = str(uuid.uuid4())
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield endpoint_id, bound_queue(conn, wire.RESULTS_EXCHANGE, "topic", endpoint_id), conn
    conn.close()


def messages(conn, queue: str) -> list[tuple[dict, list[str]]]:  # type: ignore[no-untyped-def]
    """(headers, task ids) of each message waiting in `queue`."""
    out = []
    ch = conn.channel()
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((props.headers or {}, [r.task_id for r in wire.decode_results(body)]))


def result(task_id: str) -> ResultMessage:
    return ResultMessage(task_id=task_id, status="success", result="03\n1")


def test_results_every_executor_has_go_out_together(amqp_url, results_queue) -> None:  # type: ignore[no-untyped-def]
    """Direct-path results (already in their groups) linger and share one message, marked
    forwarded; a result nobody has yet is published at once with what waits, unmarked (the
    broker forwards it)."""
    endpoint_id, q, conn = results_queue
    pub = ResultPublisher(amqp_url, endpoint_id, lambda: None)
    pub.start()
    confirmed: list[str] = []

    def count() -> int:
        while not pub.published.empty():
            confirmed.extend(pub.published.get_nowait())
        return len(confirmed)

    try:
        for tid in ("a", "b", "c"):
            pub.send(Batch([result(tid)], {tid}))
        wait_for(lambda: count() == 3, "three confirmed results")
        assert messages(conn, q) == [({wire.FORWARDED_HEADER: True}, ["a", "b", "c"])]

        pub.send(Batch([result("d")], {"d"}))
        pub.send(Batch([result("e")]))
        wait_for(lambda: count() == 5, "two more confirmed results")
        assert messages(conn, q) == [({}, ["d", "e"])]
    finally:
        pub.stop()


def test_the_group_sender_publishes_a_lone_result_or_declines(amqp_url) -> None:  # type: ignore[no-untyped-def]
    """GroupSender (used from engine threads) puts a result in its group's queue, transient and
    sent as its own account with its endpoint id in the routing key; it declines (False: the
    agent then takes the batched way) when the group has no queue bound for this endpoint (no
    such group, or one that did not grant it the direct path) or another thread is sending."""
    group_id, endpoint_id = str(uuid.uuid4()), str(uuid.uuid4())
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    # Bound as the broker binds a group that granted this endpoint the direct path.
    q = bound_queue(conn, wire.GROUPS_EXCHANGE, "topic",
                    wire.group_routing_key(group_id, endpoint_id))
    ungranted = str(uuid.uuid4())  # bound for the broker's results only
    bound_queue(conn, wire.GROUPS_EXCHANGE, "topic", wire.group_routing_key(ungranted))
    ch = conn.channel()
    sender = GroupSender(amqp_url, endpoint_id)
    try:
        assert sender.try_send(group_id, result("x")) is True
        method, props, body = ch.basic_get(q, auto_ack=True)
        assert [r.task_id for r in wire.decode_results(body)] == ["x"]
        assert (props.delivery_mode, props.type) == (1, wire.MSG_RESULTS)
        assert props.user_id == pika.URLParameters(amqp_url).credentials.username

        assert sender.try_send(str(uuid.uuid4()), result("y")) is False  # no such queue
        assert sender.try_send(ungranted, result("y")) is False  # not granted to this endpoint
        with sender._lock:  # another engine thread is sending (or hangs in flow control)
            assert sender.try_send(group_id, result("z")) is False
            service = threading.Thread(target=sender.service)  # the I/O thread's call
            service.start()
            service.join(10)
            assert not service.is_alive()  # it does not wait for the sender
        assert ch.basic_get(q, auto_ack=True)[0] is None
        sender.service()  # the idle connection answers heartbeats and stays usable
        assert sender.try_send(group_id, result("w")) is True
    finally:
        sender.close()
        conn.close()
