"""A TCP proxy that delays each direction by a one-way delay D: a network link, without netem.

Each direction is a delay line: the reader timestamps every chunk on arrival and queues it; the
writer releases each chunk at arrival + D, in order. Reading never waits for the delay, so a
link carries as much as an undelayed one, only later (a sleep per read would cap it at one read
size per D). A new connection's first client bytes also wait out the TCP handshake a real link
would cost (SYN, SYN-ACK: one round trip before the client can send), so a connection set up
on the critical path shows in the figures as it would across a WAN.

D is read when a chunk arrives, so it can change while connections stay open. Every chunk is
logged with what it carries (an HTTP request line or status, AMQP methods) and whether it
reverses its connection's direction (a request after a response, or the reverse), so a call's
round trips per link can be counted and named.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

READ_SIZE = 64 * 1024
UP, DOWN = "client->server", "server->client"

#: AMQP 0-9-1 (class id, method id) -> name, for the methods fnrelay's parties use.
AMQP_METHODS = {
    (10, 10): "Connection.Start", (10, 11): "Connection.StartOk", (10, 30): "Connection.Tune",
    (10, 31): "Connection.TuneOk", (10, 40): "Connection.Open", (10, 41): "Connection.OpenOk",
    (10, 50): "Connection.Close", (10, 51): "Connection.CloseOk",
    (20, 10): "Channel.Open", (20, 11): "Channel.OpenOk", (20, 40): "Channel.Close",
    (20, 41): "Channel.CloseOk", (40, 10): "Exchange.Declare", (40, 11): "Exchange.DeclareOk",
    (50, 10): "Queue.Declare", (50, 11): "Queue.DeclareOk", (50, 20): "Queue.Bind",
    (50, 21): "Queue.BindOk", (60, 10): "Basic.Qos", (60, 11): "Basic.QosOk",
    (60, 20): "Basic.Consume", (60, 21): "Basic.ConsumeOk", (60, 30): "Basic.Cancel",
    (60, 31): "Basic.CancelOk", (60, 40): "Basic.Publish", (60, 50): "Basic.Return",
    (60, 60): "Basic.Deliver", (60, 70): "Basic.Get", (60, 71): "Basic.GetOk",
    (60, 72): "Basic.GetEmpty", (60, 80): "Basic.Ack", (60, 90): "Basic.Reject",
    (60, 120): "Basic.Nack", (85, 10): "Confirm.Select", (85, 11): "Confirm.SelectOk",
}
HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ", b"HEAD ", b"HTTP/")


@dataclass
class Chunk:
    """One chunk as it reached the proxy; `turn` when it reversed its connection's direction
    (or opened it), i.e. when it starts a request or a response."""

    link: str
    conn: int
    direction: str
    time: float  # time.monotonic() on arrival at the proxy
    turn: bool
    labels: list[str] = field(default_factory=list)


class AmqpFrames:
    """Names the methods in one direction of an AMQP connection. Only each frame's header and
    method ids are kept; bodies are skipped as they pass, so megabytes cost no copying."""

    HEAD = 11  # frame type, channel, size; class and method ids

    def __init__(self) -> None:
        self.head = b""
        self.skip = 0  # bytes of the current frame still to pass
        self.started = False

    def feed(self, data: bytes) -> list[str]:
        names = []
        if not self.started:
            self.started = True
            if data.startswith(b"AMQP"):
                names.append("protocol header")
                data = data[8:]
        i = 0
        while i < len(data):
            if self.skip:
                n = min(self.skip, len(data) - i)
                i, self.skip = i + n, self.skip - n
                continue
            take = data[i:i + self.HEAD - len(self.head)]
            self.head, i = self.head + take, i + len(take)
            if len(self.head) < 7:
                break
            kind, _, size = struct.unpack(">BHI", self.head[:7])
            if kind == 1 and size >= 4 and len(self.head) < self.HEAD:
                break
            if kind == 1 and size >= 4:
                ids = struct.unpack(">HH", self.head[7:11])
                names.append(AMQP_METHODS.get(ids, f"method {ids[0]}.{ids[1]}"))
            elif kind == 8:
                names.append("heartbeat")
            over = len(self.head) - (size + 8)  # bytes of the next frame taken too
            i, self.skip = (i - over, 0) if over > 0 else (i, -over)
            self.head = b""
        return names


def http_label(data: bytes) -> list[str]:
    """The request line ('POST /v1/submit') or status line ('HTTP/1.1 200') a chunk opens."""
    if not data.startswith(HTTP_STARTS):
        return []
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if line.startswith("HTTP/"):
        return [" ".join(parts[:2])]
    path = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
    return [f"{parts[0]} {path}"]


class Link:
    """One delayed link (e.g. SDK-broker): its delay, and the turns seen on it."""

    def __init__(self, name: str, protocol: str, delay: float = 0.0):
        self.name, self.protocol = name, protocol
        self.delay = delay  # seconds, one way
        self.chunks: list[Chunk] = []
        self.connections = 0
        self.bytes = {UP: 0, DOWN: 0}

    def new_connection(self) -> int:
        self.connections += 1
        return self.connections

    def labeller(self) -> Callable[[bytes], list[str]]:
        return AmqpFrames().feed if self.protocol == "amqp" else http_label


class DelayLine:
    """One direction of one connection: chunks released at arrival + D, in order."""

    def __init__(self, link: Link, conn: int, direction: str, not_before: float = 0.0):
        self.link, self.conn, self.direction = link, conn, direction
        self.queue: deque[tuple[float, bytes]] = deque()
        self.ready = asyncio.Event()
        self.not_before = not_before  # the handshake a real link would have cost first

    async def read(self, reader: asyncio.StreamReader, on_chunk: Callable[[bytes], None]
                   ) -> None:
        """Queue every chunk with its release time; an empty chunk marks the end."""
        while True:
            data = await reader.read(READ_SIZE)
            due = max(time.monotonic() + self.link.delay, self.not_before)
            self.queue.append((due, data))
            self.ready.set()
            if not data:
                return
            self.link.bytes[self.direction] += len(data)
            on_chunk(data)

    async def write(self, writer: asyncio.StreamWriter) -> None:
        """Release the queued chunks at their due times; half-close at the end."""
        while True:
            while not self.queue:
                self.ready.clear()
                await self.ready.wait()
            due, data = self.queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()


class Connection:
    """A proxied connection: two delay lines, and the turn log of their chunks."""

    def __init__(self, link: Link):
        self.link, self.id = link, link.new_connection()
        self.last: str | None = None
        self.labels = {UP: link.labeller(), DOWN: link.labeller()}

    def chunk(self, direction: str, data: bytes) -> None:
        """Log the chunk with what it carries, marking a reversal of direction."""
        self.link.chunks.append(Chunk(self.link.name, self.id, direction, time.monotonic(),
                                      direction != self.last, self.labels[direction](data)))
        self.last = direction

    async def run(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                  host: str, port: int) -> None:
        handshake_done = time.monotonic() + 2 * self.link.delay
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        up = DelayLine(self.link, self.id, UP, not_before=handshake_done + self.link.delay)
        down = DelayLine(self.link, self.id, DOWN)
        tasks = [
            asyncio.ensure_future(up.read(client_r, lambda d: self.chunk(UP, d))),
            asyncio.ensure_future(up.write(server_w)),
            asyncio.ensure_future(down.read(server_r, lambda d: self.chunk(DOWN, d))),
            asyncio.ensure_future(down.write(client_w)),
        ]
        try:
            await asyncio.gather(*tasks)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            for w in (client_w, server_w):
                w.close()


class DelayProxy:
    """Listens on 127.0.0.1 and forwards to `target`; `route(peer)` picks the link a new
    connection belongs to (one listener can serve several parties, e.g. RabbitMQ's)."""

    def __init__(self, target: tuple[str, int], links: dict[str, Link],
                 route: Callable[[tuple[str, int]], str] | None = None):
        self.target, self.links = target, links
        self.route = route or (lambda _peer: next(iter(links)))
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = self.links[self.route(writer.get_extra_info("peername"))]
        try:
            await Connection(link).run(reader, writer, *self.target)
        except asyncio.CancelledError:  # the proxy is closing: the connection ends with it
            pass

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class ProxyThread:
    """Runs proxies on an event loop in a daemon thread, for code that is not asyncio."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="delay-proxy",
                                        daemon=True)
        self._thread.start()
        self.proxies: list[DelayProxy] = []

    def add(self, proxy: DelayProxy) -> int:
        """Start `proxy`; returns its port."""
        port = asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result(10)
        self.proxies.append(proxy)
        return port

    def close(self) -> None:
        """Stop listening, end every proxied connection, stop the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        for proxy in self.proxies:
            await proxy.stop()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Calibration:
    """How late the delay line itself releases a chunk: an echo server behind a link of its
    own on the proxies' event loop, pinged through it. The loop's timers wake on a millisecond
    tick (epoll), so a chunk due at arrival + D leaves up to a millisecond later; what a
    measured call loses to that is the harness's, not the network's, and the figures can be
    read net of it."""

    def __init__(self, proxies: ProxyThread, rounds: int = 20):
        self.rounds = rounds
        self.link = Link("calibration", "http")
        self._server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._echo, name="delay-calibration-echo", daemon=True).start()
        port = proxies.add(DelayProxy(self._server.getsockname(), {"calibration": self.link}))
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _echo(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:  # closed before anyone connected
            return
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(64):
                conn.sendall(data)

    def round_trip(self, delay: float) -> float:
        """The median seconds of a one-byte ping-pong through the link at `delay`."""
        self.link.delay = delay
        times = []
        for _ in range(self.rounds):
            t0 = time.monotonic()
            self._sock.sendall(b"x")
            if not self._sock.recv(64):
                raise RuntimeError("the calibration's echo server went away")
            times.append(time.monotonic() - t0)
        self.link.chunks.clear()
        return statistics.median(times)

    def lateness(self, delay: float) -> float:
        """Seconds per crossing the delay line adds beyond `delay` (over its own time at 0)."""
        if delay <= 0:
            return 0.0
        extra = self.round_trip(delay) - self.round_trip(0.0) - 2 * delay
        return max(0.0, extra / 2)

    def close(self) -> None:
        self._sock.close()
        self._server.close()
