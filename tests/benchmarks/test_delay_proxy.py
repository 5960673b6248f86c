"""The delay proxy behaves like a link with one-way delay D: each direction arrives D later
(a new connection also pays the handshake's round trip), many megabytes pass at far more than
one read per D, and the chunk log counts and names the turns. Lower bounds are the behaviour;
the upper bounds only say "not a sleep per read", with room for a busy machine."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from benchmarks.delay_proxy import (
    READ_SIZE,
    UP,
    AmqpFrames,
    DelayProxy,
    Link,
    ProxyThread,
    http_label,
)

D = 0.05


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to the end, then answer how many bytes came."""
    total = 0
    while data := await reader.read(READ_SIZE):
        total += len(data)
    writer.write(struct.pack(">Q", total))
    await writer.drain()
    writer.close()


@pytest.fixture()
def proxies() -> Iterator[ProxyThread]:
    thread = ProxyThread()
    yield thread
    thread.close()


def _server(thread: ProxyThread, handler: object) -> int:
    async def start() -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
        return int(server.sockets[0].getsockname()[1])

    return asyncio.run_coroutine_threadsafe(start(), thread.loop).result(10)


def _exchange(sock: socket.socket, data: bytes) -> float:
    t0 = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        got += sock.recv(READ_SIZE)
    assert got == data
    return time.monotonic() - t0


def test_each_direction_is_delayed_by_d_and_the_handshake_once(proxies: ProxyThread) -> None:
    link = Link("l", "http", delay=D)
    port = proxies.add(DelayProxy(("127.0.0.1", _server(proxies, _echo)), {"l": link}))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        first = _exchange(sock, b"GET /one HTTP/1.1\r\n\r\n")
        second = _exchange(sock, b"POST /two HTTP/1.1\r\n\r\n")
    assert 4 * D * 0.95 <= first < 4 * D + 0.5, first  # SYN round trip, then there and back
    assert 2 * D * 0.95 <= second < 2 * D + 0.5, second
    turns = [c for c in link.chunks if c.turn]
    assert [c.direction for c in turns][:2] == [UP, "server->client"]
    assert [c.labels for c in turns if c.direction == UP] == [["GET /one"], ["POST /two"]]


def test_the_delay_line_keeps_throughput(proxies: ProxyThread) -> None:
    """50 MB at D = 25 ms: a sleep per read would take 50 MB / 64 KB x 25 ms = 20 s."""
    size, delay = 50_000_000, 0.025
    link = Link("l", "amqp", delay=delay)
    port = proxies.add(DelayProxy(("127.0.0.1", _server(proxies, _count)), {"l": link}))
    block = b"x" * 1_000_000
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(size // len(block)):
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while len(answer) < 8:
            answer += sock.recv(8)
    seconds = time.monotonic() - t0
    assert struct.unpack(">Q", answer)[0] == size
    assert 3 * delay <= seconds < (size / READ_SIZE * delay) / 4, seconds


def test_a_route_picks_the_link_of_each_connection(proxies: ProxyThread) -> None:
    a, b = Link("a", "http"), Link("b", "http")
    seen: list[tuple[str, int]] = []

    def route(peer: tuple[str, int]) -> str:
        seen.append(peer)
        return "a" if len(seen) == 1 else "b"

    port = proxies.add(DelayProxy(("127.0.0.1", _server(proxies, _echo)), {"a": a, "b": b},
                                  route))
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            _exchange(sock, b"GET /x HTTP/1.1\r\n\r\n")
    assert (a.connections, b.connections) == (1, 1)


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, 1, len(payload)) + payload + b"\xce"


def test_amqp_methods_are_named_across_chunk_boundaries() -> None:
    publish = _frame(1, struct.pack(">HH", 60, 40) + b"\0" * 5)
    body = _frame(3, b"payload")
    stream = b"AMQP\x00\x00\x09\x01" + publish + body + _frame(8, b"")
    frames = AmqpFrames()
    names = frames.feed(stream[:10]) + frames.feed(stream[10:])
    assert names == ["protocol header", "Basic.Publish", "heartbeat"]


def test_http_chunks_are_named_by_their_first_line_only() -> None:
    assert http_label(b"POST /v1/submit?x=1 HTTP/1.1\r\nHost: h\r\n") == ["POST /v1/submit"]
    assert http_label(b"HTTP/1.1 200 OK\r\n") == ["HTTP/1.1 200"]
    assert http_label(b'{"tasks": []}') == []
