"""The Acker: a task message is acked only after the journal sync that covers it.

The channel is a recorder (the ordering is the point, and a real channel would not show
when the ack was decided); the agent's tests run it against a real RabbitMQ.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fnrelay_endpoint.agent.acker import Acker
from support.waiting import wait_for


class Channel:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def basic_ack(self, tag: int) -> None:
        self.acked.append(tag)


class Sync:
    """A journal sync that waits until released, counting its calls."""

    def __init__(self, fail_first: bool = False) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.fail_first = fail_first

    def __call__(self) -> None:
        self.calls += 1
        self.release.wait(30)
        if self.fail_first and self.calls == 1:
            raise OSError("disk trouble")


def run(fn: Callable[[], None]) -> None:
    fn()  # the agent passes add_callback_threadsafe: the I/O thread runs it


def test_acks_wait_for_the_sync_and_one_sync_covers_a_burst() -> None:
    sync, channel = Sync(), Channel()
    acker = Acker(sync, run)
    acker.start()
    try:
        acker.ack_after_sync(channel, 1)
        wait_for(lambda: sync.calls == 1, "the first sync to start")
        acker.ack_after_sync(channel, 2)
        acker.ack_after_sync(channel, 3)
        assert channel.acked == []  # nothing is acked while its sync runs
        sync.release.set()
        wait_for(lambda: channel.acked == [1, 2, 3], "all three acks")
        assert sync.calls == 2  # 1 alone, then 2 and 3 together
    finally:
        sync.release.set()
        acker.stop()


def test_a_failed_sync_acks_nothing_until_a_sync_succeeds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("fnrelay_endpoint.agent.acker.RETRY", 0.05)
    sync, channel = Sync(fail_first=True), Channel()
    sync.release.set()
    acker = Acker(sync, run)
    acker.start()
    try:
        acker.ack_after_sync(channel, 7)
        wait_for(lambda: channel.acked == [7], "the ack after the retried sync")
        assert sync.calls == 2
    finally:
        acker.stop()


def test_flush_syncs_and_acks_on_the_calling_thread() -> None:
    sync, channel = Sync(), Channel()
    sync.release.set()
    acker = Acker(sync, lambda fn: None)  # nothing runs on the I/O thread meanwhile
    acker.ack_after_sync(channel, 4)  # not started: only flush can ack it
    acker.flush()
    assert channel.acked == [4] and sync.calls == 1
