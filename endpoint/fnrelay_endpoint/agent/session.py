"""The parts of one AMQP session, made when the agent connects and closed together.

The I/O thread's connection carries the consumer channel and a publishing channel (confirms
on, for status updates, heartbeats and direct-path batches); the result publisher and the
group sender have connections of their own, and the Acker acks on the I/O thread's channel
through `add_callback_threadsafe`. A reconnect makes all of them anew.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pika

from fnrelay import wire
from fnrelay_endpoint.agent.acker import Acker
from fnrelay_endpoint.agent.journal import Journal
from fnrelay_endpoint.agent.publisher import GroupSender, ResultPublisher

log = logging.getLogger(__name__)


class Session:
    """One connection's channels, threads and senders. Only the I/O thread uses it, except
    `groups` (engine threads, behind its own lock) and `conn.add_callback_threadsafe`."""

    def __init__(self, conn: pika.BlockingConnection, user_id: str | None,
                 endpoint_id: str) -> None:
        self.conn, self.user_id, self.endpoint_id = conn, user_id, endpoint_id
        self.pub: Any = None  # the publishing channel (confirms on)
        self.results: ResultPublisher | None = None
        self.acker: Acker | None = None  # WAL journals only
        self.groups: GroupSender | None = None  # lone direct-path results

    def start(self, amqp_url: str, journal: Journal,
              on_refused: Callable[[], None], forwarded_key: str | None = None) -> None:
        """Open the publishing channel and start the senders; `on_refused` runs on the I/O
        thread when RabbitMQ refuses results (they stay unpublished in the journal)."""
        self.pub = self.conn.channel()
        self.pub.confirm_delivery()
        self.results = ResultPublisher(
            amqp_url, self.endpoint_id, lambda: self.conn.add_callback_threadsafe(on_refused),
            forwarded_key)
        self.results.start()
        if journal.wal:
            journal.defer_checkpoints()  # the Acker's syncs run them
            self.acker = Acker(journal.sync, self.conn.add_callback_threadsafe)
            self.acker.start()
        self.groups = GroupSender(amqp_url, self.endpoint_id)

    def publish(self, kind: str, body: bytes) -> None:
        """Persistent publish with a confirm (the channel is in confirm mode)."""
        self.pub.basic_publish(
            wire.RESULTS_EXCHANGE, self.endpoint_id, body,
            pika.BasicProperties(content_type=wire.CONTENT_TYPE, delivery_mode=2, type=kind,
                                 user_id=self.user_id),
            mandatory=True,
        )

    def stop_results(self) -> None:
        """Stop the result publisher; `results.published` then holds its last confirms."""
        if self.results is not None:
            self.results.stop()

    def close(self) -> None:
        """Stop the Acker and the group sender and close the connection (it may be broken)."""
        if self.acker is not None:
            self.acker.stop()
        if self.groups is not None:
            self.groups.close()
        try:
            if self.conn.is_open:
                self.conn.close()
        except Exception:  # noqa: BLE001 - already broken; nothing left to close
            pass
