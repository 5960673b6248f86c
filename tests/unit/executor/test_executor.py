"""The Executor's own rules (fnrelay.executor.api), wired to an in-memory broker and result
queue: the concurrent.futures contract for shutdown, cancelling through the broker, reloading
a task group."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import cast

import pytest

from fnrelay import Executor
from fnrelay.client import Client
from support.fake_transport import FakeApi, FakeTransport, success

WAIT = 5.0


def square(x: int) -> int:
    return x * x


@pytest.fixture
def ex(api, fake) -> Iterator[Executor]:
    executor = Executor("6e8bc430-9c3a-11d9-9669-0800200c9a66", client=cast(Client, api),
                        _transport=fake.transport)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)
    executor._stop.set()


def answer_all(api: FakeApi, fake: FakeTransport, stop: threading.Event) -> threading.Thread:
    """An endpoint in memory: squares every accepted task's argument, results by the stream."""
    def run() -> None:
        done: set[str] = set()
        while not stop.wait(0.005):
            for task_id in [t for t in list(api.records) if t not in done]:
                done.add(task_id)
                fake.stream.deliver([success(task_id, "done")])
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_submitted_call_resolves_from_the_result_stream(ex, api, fake):
    future = ex.submit(square, 3)
    while not future.task_id:
        threading.Event().wait(0.005)
    fake.stream.deliver([success(future.task_id, 9)])
    assert future.result(timeout=WAIT) == 9
    assert ex.amqp_connected and ex.task_group_id == ex._group["task_group_id"]


def test_shutdown_with_wait_returns_once_every_future_is_done_and_refuses_new_work(
        ex, api, fake):
    stop = threading.Event()
    endpoint = answer_all(api, fake, stop)
    futures = [ex.submit(square, i) for i in range(20)]
    ex.shutdown(wait=True)
    stop.set()
    endpoint.join()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == ["done"] * 20
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_shutdown_with_cancel_futures_cancels_what_was_not_sent(ex, api):
    with ex._lock:  # the submitter cannot take them meanwhile
        futures = [ex.submit(square, i) for i in range(5)]
        ex.shutdown(wait=False, cancel_futures=True)
    ex.shutdown(wait=True)  # nothing is owed: returns at once
    assert all(f.cancelled() for f in futures)
    assert api.submits == []


def test_shutdown_without_wait_returns_at_once_and_the_futures_still_resolve(ex, api, fake):
    future = ex.submit(square, 2)
    ex.shutdown(wait=False)
    assert not future.done()
    while not future.task_id:
        threading.Event().wait(0.005)
    fake.stream.deliver([success(future.task_id, 4)])
    assert future.result(timeout=WAIT) == 4


def test_cancelling_a_sent_task_asks_the_broker_and_a_later_result_is_ignored(ex, api, fake):
    future = ex.submit(square, 2)
    future._submitted.wait(WAIT)
    assert future.cancel()
    assert api.cancels == [future.task_id] and future.cancelled()
    fake.stream.deliver([success(str(future.task_id), 4)])
    assert future.cancelled()


def test_a_task_that_started_is_not_cancelled(ex, api):
    future = ex.submit(square, 2)
    future._submitted.wait(WAIT)
    api.records[str(future.task_id)]["status"] = "running"
    assert not future.cancel()
    assert api.cancels == [] and not future.done()


def test_reload_tasks_gives_futures_for_the_groups_tasks_with_results_so_far(api, fake):
    first = Executor("6e8bc430-9c3a-11d9-9669-0800200c9a66", client=cast(Client, api),
                     _transport=fake.transport, task_group_id="group-1")
    ids = api.submit("ep", [{"payload": ""}] * 2, "group-1")["task_ids"]
    api.finish(ids[0], "finished before the restart")
    futures = first.reload_tasks()
    try:
        assert [f.task_id for f in futures] == ids
        assert futures[0].result(timeout=0) == "finished before the restart"
        fake.stream.deliver([success(ids[1], "streamed after")])
        assert futures[1].result(timeout=WAIT) == "streamed after"
    finally:
        first.shutdown(wait=True)


class SlowRegistration(FakeApi):
    """A broker whose function registration waits (up to WAIT) for the task group's creation:
    it returns early only if the two requests are in flight together."""

    def __init__(self) -> None:
        super().__init__()
        self.attached = threading.Event()
        self.overlapped = False

    def create_task_group(self, *args, **kwargs):
        self.attached.set()
        return super().create_task_group(*args, **kwargs)

    def register_function(self, fn, **kwargs):
        self.overlapped = self.attached.wait(WAIT)
        return super().register_function(fn, **kwargs)


def test_a_first_submit_attaches_its_group_while_the_function_registers(fake):
    """One round trip fewer for a fresh process's first call; the call itself is unchanged."""
    api = SlowRegistration()
    executor = Executor("6e8bc430-9c3a-11d9-9669-0800200c9a66", client=cast(Client, api),
                        _transport=fake.transport)
    try:
        future = executor.submit(square, 4)
        assert api.overlapped and api.attaches == 1
        while not future.task_id:
            threading.Event().wait(0.005)
        fake.stream.deliver([success(future.task_id, 16)])
        assert future.result(timeout=WAIT) == 16
        executor.submit(square, 5)  # registered now: no second group, no second registration
        assert api.attaches == 1 and len(api.registrations) == 1
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        executor._stop.set()


def test_a_registration_that_fails_still_fails_the_submit_and_shutdown_ends(fake):
    class Refusing(FakeApi):
        def register_function(self, fn, **kwargs):
            raise ValueError("cannot serialize this")

    api = Refusing()
    executor = Executor("6e8bc430-9c3a-11d9-9669-0800200c9a66", client=cast(Client, api),
                        _transport=fake.transport)
    with pytest.raises(ValueError, match="cannot serialize"):
        executor.submit(square, 1)
    executor.shutdown(wait=True)
    executor._stop.set()
    assert not executor._submitter._thread.is_alive()
