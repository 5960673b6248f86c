"""Queue depths for /metrics, at a bounded cost to RabbitMQ.

A depth is a passive `queue.declare`, one round trip per queue. Endpoints are made by tenants
(up to `--max-endpoints-per-user` each), so probing every endpoint's queue at every scrape
would cost RabbitMQ in proportion to the tenants' choices, times the number of scrapers. Two
bounds: at most `limit` endpoint queues per pass (online endpoints first: an offline one's
queue matters least; then by id, so that the choice stays put from scrape to scrape), and one
pass per `ttl` seconds, shared by every scrape of this process in that time (concurrent ones
wait for it instead of probing again) as long as it chose the same queues: a new endpoint's
queue shows at the next scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from fnrelay import wire
from fnrelay_broker.amqp import parameters

log = logging.getLogger(__name__)

#: The broker's own queues, always probed (not counted in the limit).
BROKER_QUEUES = (("results", wire.BROKER_RESULTS_QUEUE),
                 ("records", wire.BROKER_RECORDS_QUEUE),
                 ("deadletter", wire.DEADLETTER_QUEUE))


@dataclass
class Depths:
    """One probing pass: (messages, consumers) by queue label or endpoint id."""

    broker: dict[str, tuple[int, int]] = field(default_factory=dict)
    endpoints: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Endpoint queues left out by the limit.
    unprobed: int = 0
    #: RabbitMQ answered the whole pass.
    up: bool = True


@dataclass
class Candidate:
    """An endpoint whose queue may be probed."""

    endpoint_id: str
    queue: str
    online: bool


class QueueProbe:
    def __init__(self, amqp_url: str, limit: int, ttl: float):
        self.amqp_url, self.limit, self.ttl = amqp_url, limit, ttl
        self._lock = threading.Lock()
        self._last: Depths | None = None
        self._probed: list[str] = []
        self._at = 0.0

    def depths(self, candidates: Sequence[Candidate]) -> Depths:
        """The last pass if younger than `ttl` and of the same queues, else a new one."""
        picked = chosen(candidates, self.limit)
        queues = sorted(c.queue for c in picked)
        with self._lock:
            if (self._last is None or queues != self._probed
                    or time.monotonic() - self._at >= self.ttl):
                self._last = self._probe(picked, len(candidates) - len(picked))
                self._probed, self._at = queues, time.monotonic()
            return self._last

    def _probe(self, candidates: list[Candidate], unprobed: int) -> Depths:
        """Depths by passive declaration on one short connection: a missing queue, or
        RabbitMQ out of reach, leaves figures out (and `up` False for the latter)."""
        out = Depths(unprobed=unprobed)
        try:
            conn = pika.BlockingConnection(parameters(self.amqp_url))
        except Exception as e:  # noqa: BLE001 - an outage is a figure here, not an error
            log.warning("/metrics: RabbitMQ unreachable: %s", e)
            out.up = False
            return out
        try:
            ch = conn.channel()
            for name, queue in BROKER_QUEUES:
                ch, depth = _depth(conn, ch, queue)
                if depth is not None:
                    out.broker[name] = depth
            for c in candidates:
                ch, depth = _depth(conn, ch, c.queue)
                if depth is not None:
                    out.endpoints[c.endpoint_id] = depth
        except (pika.exceptions.AMQPError, OSError) as e:
            log.warning("/metrics: reading queue depths failed: %s", e)
            out.up = False
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        return out


def chosen(candidates: Sequence[Candidate], limit: int) -> list[Candidate]:
    """`limit` endpoints, online ones first, then by id (not by the time of the last
    heartbeat: heartbeats would reorder them at every scrape, and a pass serves only scrapes
    that choose the same queues)."""
    ranked = sorted(candidates, key=lambda c: (not c.online, c.endpoint_id))
    return ranked[:limit]


def _depth(conn: pika.BlockingConnection, ch: Any, queue: str
           ) -> tuple[Any, tuple[int, int] | None]:
    """(channel to use next, (messages, consumers) of `queue` or None if it does not exist:
    RabbitMQ closes the channel then, so a new one is opened)."""
    try:
        ok = ch.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return conn.channel(), None
    return ch, (ok.method.message_count, ok.method.consumer_count)
