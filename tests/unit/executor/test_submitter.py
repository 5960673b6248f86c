"""The submitter (fnrelay.executor.submitter) against an in-memory broker and direct path:
batching, splitting by bytes, failing what the broker refuses, the direct path."""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fnrelay import errors, wire
from fnrelay.client import task_entry
from fnrelay.direct import DirectUnavailable
from fnrelay.droplog import DropLog
from fnrelay.executor import submitter as submitter_module
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.group import TaskGroup
from fnrelay.executor.pending import PendingTable
from fnrelay.executor.submitter import Submitter
from support.fake_transport import FakeApi, FakePublisher, Owner, success
from support.waiting import wait_for


def square(x: int) -> int:
    return x * x


@dataclass
class Rig:
    api: FakeApi
    pending: PendingTable
    group: TaskGroup
    submitter: Submitter
    publishers: list[FakePublisher]
    function_id: str

    def queue(self, n: int, payload: str = "", endpoint_id: str | None = None
              ) -> list[FnRelayFuture]:
        futures = []
        with self.pending.lock:
            for i in range(n):
                future = FnRelayFuture(Owner(self.pending))
                future._endpoint_id = endpoint_id or self.group.endpoint_id
                self.pending.put(future, task_entry(self.function_id, (i, payload), {}))
                futures.append(future)
        return futures

    def run_until_shutdown(self) -> None:
        """Send everything queued, as the thread does, up to shutdown's None."""
        self.pending.queue.put(None)
        self.submitter.submit_until_done()
        self.submitter.finish()


def make_rig(grant_direct: bool = False, payload_limit: int | None = None,
             batch_size: int = 128, confirm: Callable[[], None] | None = None,
             connect_gate: threading.Event | None = None) -> Rig:
    api = FakeApi(grant_direct=grant_direct, payload_limit=payload_limit)
    pending = PendingTable(DropLog(logging.getLogger("fnrelay.executor")))
    group = TaskGroup(api, str(uuid.uuid4()), None, direct=True)
    publishers: list[FakePublisher] = []

    def ensure_group(endpoint_id: str) -> dict:
        assert endpoint_id  # the first send's endpoint (the group's, in these tests)
        return group.info or group.attach()

    submitter = Submitter(pending, api, group, ensure_group,
                          lambda exchange, key: FakePublisher(exchange, key, publishers,
                                                              confirm, connect_gate, api),
                          batch_size)
    if grant_direct and connect_gate is None:  # attached, the direct path open: as a while
        group.attach()                         # after an Executor's first submit
        assert submitter.open_direct().wait(10)
    return Rig(api, pending, group, submitter, publishers, api.register_function(square))


def test_what_is_queued_together_goes_in_one_request_up_to_the_batch_size():
    rig = make_rig(batch_size=4)
    futures = rig.queue(10)
    rig.run_until_shutdown()
    assert [len(tasks) for tasks in rig.api.submits] == [4, 4, 2]
    assert all(f.task_id in rig.pending.outstanding and f._submitted.is_set() for f in futures)
    assert rig.pending.inflight == 0


def test_a_batch_is_split_so_no_request_carries_much_more_than_the_byte_budget(monkeypatch):
    monkeypatch.setattr(submitter_module, "MAX_BATCH_BYTES", 1000)
    rig = make_rig()
    rig.queue(6, payload="x" * 350)
    rig.run_until_shutdown()
    sizes = [sum(len(t["payload"]) for t in tasks) for tasks in rig.api.submits]
    assert len(sizes) == 3 and all(size <= 1000 for size in sizes)


def test_a_refused_request_fails_its_futures_with_the_brokers_reason():
    rig = make_rig()
    rig.api.refuse = errors.NotFoundError("no such endpoint", http_status=404)
    futures = rig.queue(3)
    rig.run_until_shutdown()
    for future in futures:
        with pytest.raises(errors.NotFoundError, match="no such endpoint"):
            future.result(timeout=0)
        assert future._submitted.is_set()
    assert not rig.pending.outstanding and rig.pending.inflight == 0


def test_a_chunk_over_the_brokers_limit_is_halved_and_only_the_task_too_large_alone_fails():
    rig = make_rig(payload_limit=2500)
    small = rig.queue(4, payload="s" * 200)
    big = rig.queue(1, payload="b" * 3000)
    rig.run_until_shutdown()
    assert all(f.task_id for f in small)
    with pytest.raises(errors.PayloadTooLargeError):
        big[0].result(timeout=0)
    assert rig.pending.inflight == 0


def test_futures_cancelled_before_they_are_sent_are_skipped():
    rig = make_rig()
    futures = rig.queue(3)
    assert futures[1].cancel()
    rig.run_until_shutdown()
    assert [len(tasks) for tasks in rig.api.submits] == [2]
    assert futures[1].task_id is None


def test_the_direct_path_publishes_to_the_endpoint_and_records_go_to_the_broker_batched():
    rig = make_rig(grant_direct=True)
    futures = rig.queue(3)
    rig.run_until_shutdown()
    rig.submitter.send_records()
    assert rig.api.submits == []  # no REST request
    [publisher] = rig.publishers
    assert publisher.routing_key == rig.group.endpoint_id
    [body] = publisher.tasks
    assert [t.task_id for t in wire.decode_tasks(body)] == [f.task_id for f in futures]
    assert all(f._direct and f.task_id in rig.pending.outstanding for f in futures)
    [records] = publisher.records
    assert len(wire.decode_tasks(records)) == 3


def test_shutdown_returns_once_the_broker_lists_the_direct_tasks_it_was_sent():
    # The broker writes records a moment after they come (it holds them for their results):
    # another session reloading the group right after shutdown must still find every task.
    rig = make_rig(grant_direct=True)
    [publisher] = rig.publishers
    publisher.api = None  # the records reach the broker only when the test says so
    futures = rig.queue(3)
    rig.pending.queue.put(None)
    rig.submitter.submit_until_done()
    finished = threading.Event()
    threading.Thread(target=lambda: (rig.submitter.finish(), finished.set()),
                     daemon=True).start()
    wait_for(lambda: publisher.records, "the records to be sent")
    assert not finished.wait(0.2)  # the broker does not list them yet
    rig.api.record(wire.decode_tasks(publisher.records[0]))
    assert finished.wait(10)
    listed = rig.api.get_task_group(str(rig.group.id))["task_ids"]
    assert listed == [f.task_id for f in futures]


def test_shutdown_after_the_results_came_waits_for_the_broker_to_have_them_too():
    # Reloaded at once, a finished task must come back finished, not pending.
    rig = make_rig(grant_direct=True)
    [publisher] = rig.publishers
    [future] = rig.queue(1)
    rig.pending.queue.put(None)
    rig.submitter.submit_until_done()
    rig.pending.settle_all([success(future.task_id, 1)])  # the endpoint's result, direct
    finished = threading.Event()
    threading.Thread(target=lambda: (rig.submitter.finish(), finished.set()),
                     daemon=True).start()
    wait_for(lambda: publisher.records and future.task_id in rig.api.records,
             "the records to reach the broker")
    assert not finished.wait(0.2)  # listed, but still pending there
    rig.api.finish(future.task_id, 1)
    assert finished.wait(10)


def test_a_broker_that_does_not_answer_does_not_hold_up_shutdown(caplog):
    rig = make_rig(grant_direct=True)
    rig.publishers[0].api = None
    rig.queue(1)
    rig.api.down = True
    with caplog.at_level(logging.INFO, logger="fnrelay.executor"):
        rig.run_until_shutdown()
    assert any("could not ask the broker whether it recorded" in r.getMessage()
               for r in caplog.records)


def test_a_failed_direct_publish_sends_over_rest_from_then_on(caplog):
    rig = make_rig(grant_direct=True)
    rig.queue(1)
    rig.pending.queue.put(None)
    later = rig.queue(1)  # behind the None: sent by the second run
    rig.submitter.submit_until_done()  # publishes the first task directly
    rig.publishers[0].fail = DirectUnavailable("cannot connect to RabbitMQ", sent=False)
    with caplog.at_level(logging.WARNING, logger="fnrelay.executor"):
        rig.run_until_shutdown()
    assert not rig.group.direct
    assert [len(tasks) for tasks in rig.api.submits] == [1]
    assert not later[0]._direct and later[0].task_id in rig.pending.outstanding
    assert any("submitting over REST from now on" in r.getMessage() for r in caplog.records)


def test_an_endpoint_changed_between_submits_gets_its_own_requests_in_order_over_rest():
    # Globus Compute lets ex.endpoint_id change between submits; the direct path stays
    # granted for the group's first endpoint only.
    rig = make_rig(grant_direct=True)
    other = str(uuid.uuid4())
    first = rig.queue(2)
    second = rig.queue(3, endpoint_id=other)
    third = rig.queue(1)
    rig.run_until_shutdown()
    assert [(ep, len(tasks)) for ep, tasks in zip(rig.api.submit_endpoints, rig.api.submits,
                                                 strict=True)] == [(other, 3)]
    assert sum(len(p.tasks) for p in rig.publishers) == 2  # first and third, direct
    assert all(f._submitted.is_set() for f in first + second + third)


def _published(rig: Rig, kind: str = "tasks") -> list[str]:
    return [t.task_id for p in rig.publishers for body in getattr(p, kind)
            for t in wire.decode_tasks(body)]


def test_a_bursts_messages_await_their_confirms_side_by_side():
    # Across a WAN each confirm is a round trip: a burst must not wait for them one by one.
    # Here a publish is confirmed only once another one is waiting too, which one publish at
    # a time never allows (it then fails, and the tasks go over REST).
    together = threading.Barrier(2, timeout=10)

    def confirm() -> None:
        try:
            together.wait()
        except threading.BrokenBarrierError:
            raise DirectUnavailable("no confirm", sent=True) from None

    rig = make_rig(grant_direct=True, batch_size=1, confirm=confirm)
    futures = rig.queue(4)
    rig.run_until_shutdown()
    assert rig.api.submits == []  # all direct
    assert sorted(_published(rig)) == sorted(str(f.task_id) for f in futures)
    assert all(f._direct and f._submitted.is_set() for f in futures)
    # and the submitter's end stops its lanes (an Executor's shutdown leaves no thread behind)
    assert not [t for t in threading.enumerate() if t.name == "fnrelay-publish-lane"]


def test_tasks_go_over_rest_while_the_direct_connection_opens_and_direct_after():
    # Across a WAN AMQP's connection set-up is a dozen one-way crossings; the HTTP connection
    # the group's request used is open already, so a fresh process's first call goes that way.
    opened = threading.Event()
    rig = make_rig(grant_direct=True, connect_gate=opened)
    rig.submitter.start()
    try:
        (first,) = rig.queue(1)
        assert first._submitted.wait(10)
        assert not first._direct and rig.api.submits and rig.publishers[0].tasks == []
        opened.set()
        assert rig.submitter.open_direct().wait(10)
        (later,) = rig.queue(1)
        assert later._submitted.wait(10)
        assert later._direct and _published(rig) == [later.task_id]
        assert len(rig.api.submits) == 1  # only the first went over REST
    finally:
        opened.set()
        rig.pending.queue.put(None)
        rig.submitter.join()


def test_a_chunk_the_quota_refuses_while_the_direct_connection_opens_goes_direct():
    # The quota refuses REST submits, never the direct path (docs/deployment.md): a first
    # chunk sent over REST while the connection opens must not wait out the quota.
    opened = threading.Event()
    rig = make_rig(grant_direct=True, connect_gate=opened)
    rig.api.refuse = errors.QuotaExceededError("too many unfinished tasks", retry_after=30)
    rig.submitter.start()
    try:
        (future,) = rig.queue(1)
        wait_for(lambda: rig.api.refusals >= 1, "the quota's refusal", 10)
        opened.set()
        assert future._submitted.wait(10)
        assert future._direct and _published(rig) == [future.task_id]
        assert rig.api.submits == []
    finally:
        opened.set()
        rig.api.refuse = None
        rig.pending.queue.put(None)
        rig.submitter.join()


def test_a_message_a_lane_cannot_publish_goes_over_rest_and_is_not_recorded():
    calls = itertools.count()

    def confirm() -> None:
        if next(calls) == 1:
            raise DirectUnavailable("connection lost", sent=True)

    rig = make_rig(grant_direct=True, batch_size=1, confirm=confirm)
    futures = rig.queue(3)
    rig.run_until_shutdown()
    rig.submitter.send_records()
    published = _published(rig)
    over_rest = [f for f in futures if not f._direct]
    assert not rig.group.direct
    assert 1 <= len(published) <= 2 and len(over_rest) == 3 - len(published)
    assert sum(len(tasks) for tasks in rig.api.submits) == len(over_rest)
    # the broker records only what RabbitMQ confirmed; REST records the rest itself
    assert sorted(_published(rig, "records")) == sorted(published)
    assert all(f._submitted.is_set() and f.task_id in rig.pending.outstanding
               for f in futures)
