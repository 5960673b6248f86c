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
        first = self._todo.get()
        batches, stop = [first], first is None
        while True:
            try:
                batches.append(self._todo.get_nowait())
            except queue.Empty:
                break
            stop = stop or batches[-1] is None
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
            log.info("published %d result(s)", len(chunk))
        return not stop

    def _publish(self, exchange: str, key: str, body: bytes,
                 headers: dict[str, Any] | None = None) -> None:
        self._channel.basic_publish(
            exchange, key, body,
            pika.BasicProperties(content_type=protocol.CONTENT_TYPE, delivery_mode=2,
                                 type=protocol.MSG_RESULTS, user_id=self._user,
                                 headers=headers),
            mandatory=True)
