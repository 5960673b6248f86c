"""The direct path's publisher (fnrelay.direct.DirectPublisher) against the session's RabbitMQ,
through a link with a one-way delay (benchmarks.delay_proxy): tasks wait for their confirm,
the broker's records do not (nothing waits for them), and both arrive."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from benchmarks.delay_proxy import DelayProxy, Link, ProxyThread
from fnrelay import wire
from fnrelay.direct import DirectPublisher

D = 0.3  # one way: long enough that a round trip stands out on a busy machine
KEY = "ep-1"


@pytest.fixture()
def vhost_url(new_vhost) -> Iterator[str]:
    url = new_vhost("fnrelay-direct-pub")
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for queue, key in (("tasks", KEY), ("records", KEY + wire.RECORDS_SUFFIX)):
        ch.queue_declare(queue)
        ch.queue_bind(queue, "amq.direct", key)
    conn.close()
    yield url


def _through(proxy_port: int, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy_port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _count(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def test_records_are_not_waited_for_and_still_arrive(vhost_url: str) -> None:
    proxies = ProxyThread()
    try:
        port = urlsplit(vhost_url).port or 5672
        link = Link("sdk-rabbitmq", "amqp")
        proxy_port = proxies.add(DelayProxy(("127.0.0.1", port), {"l": link}))
        publisher = DirectPublisher("amq.direct", KEY)
        url = _through(proxy_port, vhost_url)
        publisher.publish(url, b"[]")  # connects undelayed
        link.delay = D
        t0 = time.monotonic()
        publisher.publish(url, b"[]")
        tasks_took = time.monotonic() - t0
        publisher.publish(url, b"[]", records=True)  # opens its channel: one round trip
        t0 = time.monotonic()
        publisher.publish(url, b"[]", records=True)
        records_took = time.monotonic() - t0
        assert tasks_took >= 2 * D * 0.95, tasks_took  # there and back: the confirm
        assert records_took < D, records_took  # gone without an answer to wait for
        publisher.close()
        deadline = time.monotonic() + 10
        while _count(vhost_url, "records") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (_count(vhost_url, "tasks"), _count(vhost_url, "records")) == (2, 2)
    finally:
        proxies.close()
