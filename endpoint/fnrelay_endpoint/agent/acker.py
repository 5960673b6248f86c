"""Acks for task messages, sent once their journal commits are on disk.

The agent journals a message's tasks and starts them at once, but acks the message only when
the commit is durable, so RabbitMQ keeps every task until the endpoint can no longer lose it.
The fsync (a millisecond or so here) runs on this thread: on the I/O thread it held up the
results of the very tasks it covered. One fsync covers every commit made before it, so a
burst of messages, or lone calls in a row GATHER apart, costs one. The acks themselves go out
on the I/O thread (pika is not thread-safe), scheduled through `call_soon` (the connection's
add_callback_threadsafe).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pika.exceptions

log = logging.getLogger(__name__)

RETRY = 1.0  # seconds before a failed sync is tried again
#: Seconds the first message of a sync waits for others: one fsync and one wake-up of the I/O
#: thread per GATHER, not per message (the endpoint's prefetch leaves room for the wait).
GATHER = 0.02


class Acker(threading.Thread):
    """Syncs the journal, then has the I/O thread ack the messages the sync covered."""

    def __init__(self, sync: Callable[[], None], call_soon: Callable[[Callable[[], None]], None]):
        super().__init__(name="fnrelay-acker", daemon=True)
        self._sync, self._call_soon = sync, call_soon
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[tuple[Any, int]] = []  # (channel, delivery tag), committed
        self._stopped = False

    def ack_after_sync(self, channel: Any, delivery_tag: int) -> None:
        """Ack this message once a sync after now is done (its tasks are committed)."""
        with self._lock:
            self._pending.append((channel, delivery_tag))
        self._wake.set()

    def flush(self) -> None:
        """Sync and ack what is pending, on the calling thread (the I/O thread, stopping)."""
        batch = self._take()
        if batch:
            self._sync()
            _ack(batch)

    def stop(self) -> None:
        """End the thread; acks still pending are dropped (RabbitMQ redelivers those
        messages, and the journal knows their tasks)."""
        self._stopped = True
        self._wake.set()
        self.join(timeout=10)

    def run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopped:
                return
            time.sleep(GATHER)
            self._wake.clear()
            batch = self._take()
            if not batch:
                continue
            try:
                self._sync()
            except OSError as e:  # the acks wait; RabbitMQ keeps the tasks meanwhile
                log.error("cannot sync the journal (%s); retrying in %g s", e, RETRY)
                with self._lock:
                    self._pending[:0] = batch
                time.sleep(RETRY)
                self._wake.set()
                continue
            try:
                self._call_soon(functools.partial(_ack, batch))
            except Exception:  # noqa: BLE001 - the connection is closing: RabbitMQ redelivers
                return

    def _take(self) -> list[tuple[Any, int]]:
        with self._lock:
            batch, self._pending = self._pending, []
        return batch


def _ack(batch: list[tuple[Any, int]]) -> None:
    for channel, tag in batch:
        try:
            channel.basic_ack(tag)
        except (pika.exceptions.AMQPError, OSError):  # channel gone: redelivered, deduplicated
            return
