"""The result watcher (fnrelay.executor.watcher) against an in-memory result queue and broker:
streaming, falling back to REST polling while the stream is down, attaching again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from fnrelay import wire
from fnrelay.droplog import DropLog
from fnrelay.executor import watcher as watcher_module
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.group import TaskGroup
from fnrelay.executor.pending import PendingTable
from fnrelay.executor.transport import QueueGone, StreamLost
from fnrelay.executor.watcher import Poller, ResultWatcher
from support.fake_transport import AMQP_URL, ENDPOINT_ACCOUNT, FakeApi, FakeStream, Owner, success

WAIT = 5.0
LOGGER = "fnrelay.executor"


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@dataclass
class Rig:
    api: FakeApi
    stream: FakeStream
    pending: PendingTable
    group: TaskGroup
    watcher: ResultWatcher
    stop: threading.Event

    def submitted(self) -> tuple[FnRelayFuture, str]:
        """A future whose task the broker accepted over REST."""
        future = FnRelayFuture(Owner(self.pending))
        task_id = self.api.submit("ep", [{"payload": ""}])["task_ids"][0]
        self.pending.sending()
        self.pending.accepted([(future, {})], [task_id])
        return future, task_id


@pytest.fixture
def rig(monkeypatch) -> Iterator[Rig]:
    # Reconnects in tens of milliseconds, not seconds: the rules are the same.
    monkeypatch.setattr(watcher_module, "RECONNECT_BASE", 0.05)
    monkeypatch.setattr(watcher_module, "POLL_MIN", 0.01)
    monkeypatch.setattr(watcher_module, "IDLE", 0.01)
    api, stream = FakeApi(), FakeStream()
    dropped = DropLog(logging.getLogger(LOGGER))
    pending = PendingTable(dropped)
    group = TaskGroup(api, "ep", None, direct=False)
    group.attach()
    stop = threading.Event()
    watcher = ResultWatcher(pending, group, stream, Poller(api, pending), api, stop, dropped)
    yield Rig(api, stream, pending, group, watcher, stop)
    stop.set()
    if stream.gate is not None:
        stream.gate.set()
    watcher.join()


def test_results_stream_in_settle_their_futures_and_are_acknowledged(rig):
    future, task_id = rig.submitted()
    rig.watcher.start()
    rig.stream.deliver([success(task_id, "streamed")])
    assert future.result(timeout=WAIT) == "streamed"
    assert rig.watcher.connected
    info = rig.group.info
    assert rig.stream.opened == [(AMQP_URL, info["queue"], watcher_module.PREFETCH)]
    until(lambda: rig.stream.acked == 1)  # acknowledged once the queue went quiet
    polls = rig.api.polls  # at most one, while the stream was opening
    time.sleep(0.05)
    assert rig.api.polls == polls <= 1  # the stream was enough


def test_while_the_stream_first_opens_rest_answers_for_the_tasks_the_broker_has(rig):
    # Across a WAN the stream's AMQP set-up takes a dozen one-way crossings, and a fresh
    # process's first result reaches the broker sooner: it must not wait for the stream.
    rig.stream.gate = threading.Event()
    future, task_id = rig.submitted()
    rig.watcher.start()
    rig.api.finish(task_id, "over REST")
    assert future.result(timeout=WAIT) == "over REST"
    assert not rig.watcher.connected and rig.stream.opened == []
    second, second_id = rig.submitted()
    rig.stream.gate.set()
    until(lambda: rig.watcher.connected)
    polls = rig.api.polls
    rig.api.finish(second_id, "at the broker")  # polling would see it at once
    time.sleep(0.05)
    assert rig.api.polls == polls and not second.done()  # no more polls: the stream is up
    rig.stream.deliver([success(second_id, "streamed")])
    assert second.result(timeout=WAIT) == "streamed"


def test_without_the_stream_results_come_by_polling_and_the_stream_is_taken_up_again(
        rig, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    rig.stream.failures = [StreamLost("connection refused")] * 3
    first, first_id = rig.submitted()
    second, second_id = rig.submitted()
    rig.watcher.start()
    rig.api.finish(first_id, "polled")
    assert first.result(timeout=WAIT) == "polled"
    # Back on the stream once RabbitMQ answers: the next result comes that way.
    until(lambda: rig.watcher.connected)
    rig.stream.deliver([success(second_id, "streamed")])
    assert second.result(timeout=WAIT) == "streamed"
    lost = [r for r in caplog.records if "result stream from RabbitMQ" in r.getMessage()
            and "unavailable" in r.getMessage()]
    assert [r.levelno for r in lost] == [logging.WARNING, logging.INFO, logging.INFO]
    text = lost[0].getMessage()
    assert "rabbit.test:5672" in text and rig.api.broker_url in text
    assert "connection refused" in text and "s3cret" not in text
    assert any("is back" in r.getMessage() for r in caplog.records)


def test_a_broken_connection_mid_stream_falls_back_then_reconnects(rig):
    future, task_id = rig.submitted()
    rig.watcher.start()
    rig.stream.break_connection(StreamLost("connection reset"))
    rig.stream.deliver([success(task_id, "after the break")])
    assert future.result(timeout=WAIT) == "after the break"
    assert len(rig.stream.opened) == 2


def test_shutdown_ends_the_streams_wait_at_once(rig, monkeypatch):
    # A quiet stream is checked for the end every IDLE: a `with Executor(...)` block must not
    # end that much late.
    monkeypatch.setattr(watcher_module, "IDLE", 60.0)
    future, task_id = rig.submitted()
    rig.watcher.start()
    rig.stream.deliver([success(task_id, "streamed")])
    assert future.result(timeout=WAIT) == "streamed"
    until(lambda: rig.watcher.connected)
    rig.pending.closed = True
    rig.stop.set()
    rig.watcher.wake()
    rig.watcher._thread.join(timeout=10)
    assert not rig.watcher._thread.is_alive()


def test_an_expired_queue_makes_the_watcher_attach_again_and_poll_once(rig):
    future, task_id = rig.submitted()
    future._direct = True  # not polled while the stream first opens: only the re-attach's poll
    rig.api.finish(task_id, "recorded while the queue was gone")
    rig.stream.failures = [QueueGone("NOT_FOUND - no queue")]
    attaches = rig.api.attaches
    rig.watcher.start()
    assert future.result(timeout=WAIT) == "recorded while the queue was gone"
    assert rig.api.attaches == attaches + 1


def test_messages_from_unknown_senders_and_malformed_ones_are_dropped_and_logged(rig, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    future, task_id = rig.submitted()
    rig.watcher.start()
    rig.stream.deliver([success(task_id, "forged")], sender="mallory")
    rig.stream.inbox.put(watcher_module.Delivery(99, "fnrelay-broker", wire.MSG_RESULTS, b"{"))
    rig.stream.deliver([success(task_id, "endpoint's")], sender=ENDPOINT_ACCOUNT)
    rig.stream.deliver([success(task_id, "genuine")])
    assert future.result(timeout=WAIT) == "genuine"
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropping")]
    assert dropped and "'mallory'" in dropped[0]  # then at most one line per interval


def test_the_watcher_ends_once_shut_down_with_nothing_owed(rig):
    future, task_id = rig.submitted()
    rig.watcher.start()
    rig.pending.closed = True
    rig.stream.deliver([success(task_id, 1)])
    assert future.result(timeout=WAIT) == 1
    rig.watcher._thread.join(WAIT)
    assert not rig.watcher._thread.is_alive()
