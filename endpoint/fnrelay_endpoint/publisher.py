"""The endpoint's result publisher: one thread and one AMQP connection of its own.

pika's BlockingChannel waits for each publisher confirm, and RabbitMQ confirms a persistent
message only once it is on disk (a millisecond or more here). On the agent's I/O thread those
waits held up the next task's arrival; here they overlap with it, and whatever results pile up
meanwhile go out together in the next message. (Direct-path results reach their task group
before this: the agent publishes those itself, as transient messages, whose confirms are
quick; see Agent._to_groups.)

The journal stays the I/O thread's alone: this thread reports what RabbitMQ confirmed through
`published` (a thread-safe queue) and the agent marks it in the journal. A result confirmed but
not yet marked when the endpoint stops is published again at the next start, which the broker
and the Executor ignore.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from fnrelay import protocol
from fnrelay.amqp import connection_parameters
from fnrelay.protocol import ResultMessage

log = logging.getLogger(__name__)

BATCH = 256  # results per message
#: Seconds results that already reached their task groups wait for company: nobody waits for
#: the broker's copy, so one message (one disk write at RabbitMQ, one wake-up of the broker)
#: per LINGER rather than per task, which lone calls in a row feel as CPU taken from them.
LINGER = 0.05
#: Seconds between services of the idle connection (RabbitMQ's heartbeats).
SERVICE = 5.0


@dataclass
class Batch:
    """Results to publish to the broker; `forwarded`: ids already in their groups' queues."""

    results: list[ResultMessage]
    forwarded: set[str] = field(default_factory=set)


class ResultPublisher(threading.Thread):
    """Publishes handed-over results to the broker, persistent and confirmed."""

    def __init__(self, amqp_url: str, endpoint_id: str, on_refused: Callable[[], None]):
        super().__init__(name="fnrelay-result-publisher", daemon=True)
        self.amqp_url, self.endpoint_id, self.on_refused = amqp_url, endpoint_id, on_refused
        self._todo: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        #: Task ids whose results RabbitMQ confirmed (the agent marks them in the journal).
        self.published: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._channel: Any = None
        self._user: str | None = None
        self.failed = threading.Event()  # the connection broke: the agent's session ends

    def send(self, batch: Batch) -> None:
        self._todo.put(batch)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what was handed over, then end."""
        self._todo.put(None)
        self.join(timeout)

    def run(self) -> None:
        params = connection_parameters(self.amqp_url, "fnrelay-endpoint-results")
        try:
            conn = pika.BlockingConnection(params)
        except (pika.exceptions.AMQPError, OSError) as e:
            log.warning("result publisher cannot connect: %r", e)
            self.failed.set()
            return
        try:
            self._channel = conn.channel()
            self._channel.confirm_delivery()
            self._user = params.credentials.username
            while self._serve_once():
                pass
        except (pika.exceptions.AMQPError, OSError) as e:
            log.warning("result publisher lost its connection: %r", e)
            self.failed.set()
        finally:
            try:
                if conn.is_open:
                    conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    def _serve_once(self) -> bool:
        """Publish everything handed over so far; False once stopped."""
        batches = self._take()
        stop = None in batches
        results = [r for b in batches if b is not None for r in b.results]
        forwarded = {i for b in batches if b is not None for i in b.forwarded}
        for i in range(0, len(results), BATCH):
            chunk = results[i : i + BATCH]
            # All of them already went to their groups: the broker records without forwarding.
            done = all(r.task_id in forwarded for r in chunk)
            try:
                self._publish(protocol.RESULTS_EXCHANGE, self.endpoint_id,
                              protocol.encode_results(chunk),
                              {protocol.FORWARDED_HEADER: True} if done else None)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
                log.warning("RabbitMQ did not take %d result(s) (%s); retrying in 5 s",
                            len(chunk), type(e).__name__)
                self.on_refused()
                continue
            self.published.put([r.task_id for r in chunk])
            log.debug("published %d result(s)", len(chunk))
        return not stop

    def _take(self) -> list[Batch | None]:
        """The batches handed over so far (waiting for the first, answering heartbeats
        meanwhile); direct-path-only results linger up to LINGER for more."""
        while True:
            try:
                batches = [self._todo.get(timeout=SERVICE)]
                break
            except queue.Empty:
                self._channel.connection.process_data_events(time_limit=0)
        deadline = time.monotonic() + LINGER
        while True:
            try:
                batches.append(self._todo.get_nowait())
                continue
            except queue.Empty:
                pass
            if not _may_linger(batches):
                return batches
            left = deadline - time.monotonic()
            if left <= 0:
                return batches
            try:
                batches.append(self._todo.get(timeout=left))
            except queue.Empty:
                return batches

    def _publish(self, exchange: str, key: str, body: bytes,
                 headers: dict[str, Any] | None = None) -> None:
        self._channel.basic_publish(
            exchange, key, body,
            pika.BasicProperties(content_type=protocol.CONTENT_TYPE, delivery_mode=2,
                                 type=protocol.MSG_RESULTS, user_id=self._user,
                                 headers=headers),
            mandatory=True)


def _may_linger(batches: list[Batch | None]) -> bool:
    """Only results every Executor already has, and not too many, may wait."""
    if None in batches:
        return False
    n = 0
    for b in batches:
        assert b is not None
        n += len(b.results)
        if any(r.task_id not in b.forwarded for r in b.results):
            return False
    return n < BATCH
