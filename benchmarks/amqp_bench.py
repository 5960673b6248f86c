"""The transport's limit: a raw pika round trip on the same RabbitMQ, with fnrelay's guarantees.

A driver publishes messages of an fnrelay task message's size to a durable queue; an echo
process (the endpoint's stand-in, its own OS process like the real one) consumes them and
publishes each back to a second durable queue, acking the input only once RabbitMQ confirmed
the output. Messages are persistent and both publishers use publisher confirms handled
asynchronously (pika's SelectConnection), never one blocking confirm per message, which would
cap pika at a few hundred messages/s. No serialization, database or task execution: what is
left is the price of RabbitMQ and pika themselves.
"""

from __future__ import annotations

import multiprocessing as mp
import uuid
from typing import Any

import pika

from benchmarks.stats import clock, latency_summary, throughput_summary

PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type="application/json")
ECHO_PREFETCH = 512  # the endpoint's default prefetch
WINDOW = 1000  # round trips in flight at most during the rate run
POLL = 0.1  # seconds between checks of the stop flag


class BenchTimeout(RuntimeError):
    """A benchmark phase did not finish within its time limit."""


# --- the echo process -------------------------------------------------------------------------
def _echo(url: str, inbox: str, outbox: str, ready: Any, stop: Any) -> None:
    """Consume `inbox`, publish each body to `outbox`, ack the input once the output is
    confirmed (at-least-once, as the endpoint does). Runs until `stop` is set."""
    pending: dict[int, int] = {}  # publish sequence number -> consumed delivery tag
    seq = 0

    def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
        nonlocal seq
        seq += 1
        pending[seq] = method.delivery_tag
        ch.basic_publish("", outbox, body, pika.BasicProperties(
            delivery_mode=2, content_type="application/json", message_id=props.message_id))

    def on_confirm(frame: Any) -> None:
        tag, multiple = frame.method.delivery_tag, frame.method.multiple
        done = [s for s in pending if s <= tag] if multiple else [tag]
        tags = [pending.pop(s) for s in done if s in pending]
        if tags:
            channel.basic_ack(max(tags), multiple=multiple)

    def on_channel(ch: Any) -> None:
        nonlocal channel
        channel = ch
        ch.confirm_delivery(on_confirm)
        ch.basic_qos(prefetch_count=ECHO_PREFETCH)
        ch.basic_consume(inbox, on_message)
        ready.set()

    def check_stop() -> None:
        if stop.is_set():
            conn.close()
        else:
            conn.ioloop.call_later(POLL, check_stop)

    channel: Any = None
    conn = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda c, e: c.ioloop.stop(),
        on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.call_later(POLL, check_stop)
    conn.ioloop.start()


# --- the driver ---------------------------------------------------------------------------------
class _Driver:
    """Publishes to the echo's inbox and times each message's return from the outbox."""

    def __init__(self, url: str, inbox: str, outbox: str, body: bytes):
        self.url, self.inbox, self.outbox, self.body = url, inbox, outbox, body
        self.sent: dict[str, float] = {}
        self.rtts: list[float] = []
        self.returned = 0
        self.correct = True
        self.error: str | None = None

    def run(self, n: int, window: int, timeout: float) -> None:
        """Round-trip `n` messages with at most `window` in flight; raises on timeout."""
        self.n, self.window, self.next = n, window, 0
        self.conn = pika.SelectConnection(
            pika.URLParameters(self.url), on_open_callback=self._on_open,
            on_open_error_callback=self._fail, on_close_callback=lambda c, e: c.ioloop.stop())
        self.conn.ioloop.call_later(timeout, lambda: self._fail(
            self.conn, f"raw AMQP round trip: {self.returned}/{n} back after {timeout:.0f}s"))
        self.conn.ioloop.start()
        if self.error:
            raise BenchTimeout(self.error)

    def _fail(self, conn: Any, error: Any) -> None:
        self.error = str(error)
        if conn.is_open:
            conn.close()
        else:
            conn.ioloop.stop()

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, ch: Any) -> None:
        self.ch = ch
        ch.confirm_delivery(lambda frame: None)  # confirmed asynchronously; nothing waits on it
        ch.basic_qos(prefetch_count=self.window)
        ch.basic_consume(self.outbox, self._on_return)
        self.t_first = clock()
        self._fill()

    def _fill(self) -> None:
        while self.next < self.n and self.next - self.returned < self.window:
            mid = str(self.next)
            self.next += 1
            self.sent[mid] = clock()
            self.ch.basic_publish("", self.inbox, self.body, pika.BasicProperties(
                delivery_mode=2, content_type="application/json", message_id=mid))

    def _on_return(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        now = clock()
        self.rtts.append(now - self.sent.pop(props.message_id, now))
        self.correct &= body == self.body
        self.returned += 1
        ch.basic_ack(method.delivery_tag)
        if self.returned >= self.n:
            self.t_last = now
            self.conn.close()
        else:
            self._fill()


def _declare(url: str, *queues: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        ch = conn.channel()
        for q in queues:
            ch.queue_declare(q, durable=True)


def _delete(url: str, *queues: str) -> None:
    try:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            for q in queues:
                ch.queue_delete(q)
    except pika.exceptions.AMQPError:
        pass


def run(url: str, message_size: int, n_latency: int, n_throughput: int,
        warmup: int = 50, timeout: float = 300.0) -> dict[str, Any]:
    """Latency (one message at a time) and rate (window of WINDOW) of the raw round trip."""
    tag = uuid.uuid4().hex[:12]
    inbox, outbox = f"fnrelay.bench.{tag}.in", f"fnrelay.bench.{tag}.out"
    body = b"x" * message_size
    _declare(url, inbox, outbox)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    echo = ctx.Process(target=_echo, args=(url, inbox, outbox, ready, stop), daemon=True)
    echo.start()
    try:
        if not ready.wait(60):
            raise BenchTimeout("the raw AMQP echo process did not start within 60s")
        _Driver(url, inbox, outbox, body).run(warmup, 1, timeout)
        lat = _Driver(url, inbox, outbox, body)
        lat.run(n_latency, 1, timeout)
        rate = _Driver(url, inbox, outbox, body)
        rate.run(n_throughput, WINDOW, timeout)
    finally:
        stop.set()
        echo.join(10)
        if echo.is_alive():
            echo.kill()
            echo.join()
        _delete(url, inbox, outbox)
    return {
        "message_bytes": message_size,
        "settings": {"persistent": True, "durable_queues": True, "confirms": "asynchronous",
                     "window": WINDOW, "echo_prefetch": ECHO_PREFETCH},
        "latency": {**latency_summary(lat.rtts), "correct": lat.correct},
        "throughput": {**throughput_summary(n_throughput, rate.t_last - rate.t_first,
                                            rate.correct), "round_trips_per_s":
                       n_throughput / (rate.t_last - rate.t_first)},
    }
