"""Heartbeats, durable waiting, RabbitMQ restarts and re-attaching to a task group: real
processes on a stack of this module's own (tests/support/private_stack.py)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from fnrelay import Executor
from support.leftover_watchers import abandon
from support.private_stack import private_stack
from support.session import MARKER
from support.waiting import wait_for


def square(x):
    return x * x


def sleep_then(x, seconds):
    import time

    time.sleep(seconds)
    return x


@pytest.fixture(scope="module")
def stack():
    yield from private_stack(MARKER)


def test_killed_endpoint_turns_offline_and_its_tasks_wait_for_it(stack):
    ep = stack.endpoint("hb")
    client = stack.client()
    ep.kill()
    wait_for(lambda: client.get_endpoint_status(ep.endpoint_id)["status"] == "offline",
             "the killed endpoint to be offline (threshold 4 s)")
    with Executor(ep.endpoint_id, client=client) as ex:
        futures = [ex.submit(square, i) for i in range(20)]
        wait_for(lambda: all(f.task_id for f in futures), "the broker to accept the tasks")
        assert not any(f.done() for f in futures)
        ep.start()
        assert [f.result(timeout=120) for f in futures] == [i * i for i in range(20)]


class _Printed(logging.Handler):
    """Keeps what a handler at NOTSET on the root would print of pika's and globus-sdk's
    records from the Executor's threads (named fnrelay-...)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (record.name.split(".")[0] in ("pika", "globus_sdk")
                and record.threadName.startswith("fnrelay-")):
            self.records.append(record)


@pytest.fixture
def library_noise() -> Iterator[list[logging.LogRecord]]:
    """What a program that said `logging.basicConfig(level=logging.WARNING)` prints of the
    libraries' records of the outage from the Executor's threads: the root logger at WARNING,
    its handler at NOTSET (as basicConfig makes it). It should be nothing, under any label:
    pika logs each failed attempt as seven ERRORs and a traceback, globus-sdk each failed
    request at WARNING; the Executor's one WARNING says it all."""
    root, handler = logging.getLogger(), _Printed()
    level = root.level
    root.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_all_tasks_finish_across_a_rabbitmq_restart(stack, caplog, library_noise):
    caplog.set_level(logging.INFO, logger="fnrelay.executor")
    ep = stack.endpoint("amqp-restart", max_workers=4)
    client = stack.client()
    with Executor(ep.endpoint_id, client=client) as ex:
        first = [ex.submit(sleep_then, i, 0.5) for i in range(40)]
        stack.rabbitmq.stop()
        later = [ex.submit(square, i) for i in range(40)]  # accepted while RabbitMQ is down
        stack.rabbitmq.start()
        assert [f.result(timeout=180) for f in first] == list(range(40))
        assert [f.result(timeout=180) for f in later] == [i * i for i in range(40)]
    # The user, whose futures waited, was told why once, at WARNING, and when it was over.
    lost = [r for r in caplog.records if "result stream from RabbitMQ" in r.getMessage()
            and "unavailable" in r.getMessage()]
    assert lost and lost[0].levelno == logging.WARNING
    assert sum(r.levelno == logging.WARNING for r in lost) == 1
    assert client.broker_url in lost[0].getMessage()
    assert "unavailable ()" not in lost[0].getMessage()  # an error without text is named
    if ex.amqp_connected:  # the stream came back before the results did (not always: polling
        # may get them first while the reconnect waits out its backoff) and said so
        assert any("result stream from RabbitMQ at" in r.getMessage() and "is back" in
                   r.getMessage() for r in caplog.records)
    assert not library_noise, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in library_noise]
    reader = urlsplit(ex._group["amqp_url"])  # the group's reader account
    assert reader.hostname in lost[0].getMessage()
    assert not any(secret in r.getMessage() for r in lost
                   for secret in (reader.username, reader.password)), "never the credentials"


def test_an_executor_says_once_that_it_cannot_reach_the_service(stack, caplog, library_noise):
    """RabbitMQ and the broker both gone (the service down, or the laptop offline): the
    futures wait, and the user is told why once, at WARNING, naming the broker."""
    caplog.set_level(logging.INFO, logger="fnrelay.executor")
    ep = stack.endpoint("service-gone")
    client = stack.client()
    client.retry_config.max_retries = 0  # each poll fails at once, not after ~19 s of retries

    def said(text: str) -> list[logging.LogRecord]:
        # Only this Executor's words: a leftover Executor of an earlier test, whose stack is
        # gone, may still be polling its own broker in this process.
        return [r for r in caplog.records
                if text in r.getMessage() and client.broker_url in r.getMessage()]

    with Executor(ep.endpoint_id, client=client) as ex:
        slow = ex.submit(sleep_then, 5, 2)
        wait_for(lambda: slow.task_id, "the task to be accepted")
        stack.rabbitmq.stop()
        stack.broker.stop()
        try:
            wait_for(lambda: len(said("cannot poll the broker")) >= 2,
                     "the Executor to poll the broker twice in vain", timeout=120)
        finally:  # back up whatever happened: the next tests share them
            stack.broker.start()
            stack.rabbitmq.start()
        assert slow.result(timeout=180) == 5
    failed = said("cannot poll the broker")
    assert [r.levelno for r in failed[:2]] == [logging.WARNING, logging.INFO]
    assert not library_noise, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in library_noise]
    assert client.broker_url in failed[0].getMessage()


def test_reload_tasks_reattaches_to_a_task_group(stack):
    ep = stack.endpoint("reattach")
    client = stack.client()
    ex = Executor(ep.endpoint_id, client=client)
    done = ex.submit(square, 7)
    assert done.result(timeout=120) == 49
    running = [ex.submit(sleep_then, i, 2) for i in range(3)]
    wait_for(lambda: all(f.task_id for f in running), "the tasks to be accepted")
    group = ex.task_group_id
    abandon(ex)  # the notebook restarts: this process and its futures are gone

    again = Executor(ep.endpoint_id, client=stack.client(), task_group_id=group)
    futures = again.reload_tasks()
    assert [f.task_id for f in futures] == [done.task_id] + [f.task_id for f in running]
    assert [f.result(timeout=120) for f in futures] == [49, 0, 1, 2]
    again.shutdown()


def test_reload_tasks_needs_a_task_group_id(stack):
    with pytest.raises(ValueError, match="task_group_id"):
        Executor(str(uuid.uuid4()), client=stack.client()).reload_tasks()
