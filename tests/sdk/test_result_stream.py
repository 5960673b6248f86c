"""The real result stream (fnrelay.executor.transport.AmqpResultStream) against the session's
RabbitMQ: a wake from another thread ends its wait for the next message at once, which is
what lets an Executor's shutdown end without waiting out the stream's idle tick."""

from __future__ import annotations

import threading
import time

import pika

from fnrelay.executor.transport import AmqpResultStream

LONG = 60.0  # the stream's wait: far longer than anything in this test may take


def test_a_wake_from_another_thread_ends_the_wait_and_keeps_what_came_before(
        new_vhost) -> None:  # type: ignore[no-untyped-def]
    url = new_vhost("fnrelay-result-stream")
    conn = pika.BlockingConnection(pika.URLParameters(url))
    conn.channel().queue_declare("group")
    conn.channel().basic_publish("", "group", b"first")
    channel = AmqpResultStream().open(url, "group", 10)
    got: list[bytes | None] = []
    ended = threading.Event()

    def consume() -> None:
        for delivery in channel.deliveries(LONG):
            got.append(None if delivery is None else delivery.body)
            if delivery is not None:
                channel.ack(delivery.tag)
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [b"first"]
    channel.wake()
    assert ended.wait(10), "the wait did not end"
    assert got == [b"first"]  # ended, not a None yielded after the idle wait
    channel.close()
    channel.wake()  # on a closed channel: nothing to end, and no error
    left = conn.channel().queue_declare("group", passive=True).method.message_count
    conn.close()
    assert left == 0  # what was acked stays acked
