"""Heartbeats, durable waiting, RabbitMQ restarts and re-attaching to a task group: real
processes on a stack of this module's own (tests/support/private_stack.py)."""

from __future__ import annotations

import uuid

import pytest

from fnrelay import Executor
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


def test_all_tasks_finish_across_a_rabbitmq_restart(stack):
    ep = stack.endpoint("amqp-restart", max_workers=4)
    client = stack.client()
    with Executor(ep.endpoint_id, client=client) as ex:
        first = [ex.submit(sleep_then, i, 0.5) for i in range(40)]
        stack.rabbitmq.stop()
        later = [ex.submit(square, i) for i in range(40)]  # accepted while RabbitMQ is down
        stack.rabbitmq.start()
        assert [f.result(timeout=180) for f in first] == list(range(40))
        assert [f.result(timeout=180) for f in later] == [i * i for i in range(40)]


def test_reload_tasks_reattaches_to_a_task_group(stack):
    ep = stack.endpoint("reattach")
    client = stack.client()
    ex = Executor(ep.endpoint_id, client=client)
    done = ex.submit(square, 7)
    assert done.result(timeout=120) == 49
    running = [ex.submit(sleep_then, i, 2) for i in range(3)]
    wait_for(lambda: all(f.task_id for f in running), "the tasks to be accepted")
    group = ex.task_group_id
    ex.shutdown(wait=False)  # the notebook restarts: these futures are gone

    again = Executor(ep.endpoint_id, client=stack.client(), task_group_id=group)
    futures = again.reload_tasks()
    assert [f.task_id for f in futures] == [done.task_id] + [f.task_id for f in running]
    assert [f.result(timeout=120) for f in futures] == [49, 0, 1, 2]
    again.shutdown()


def test_reload_tasks_needs_a_task_group_id(stack):
    with pytest.raises(ValueError, match="task_group_id"):
        Executor(str(uuid.uuid4()), client=stack.client()).reload_tasks()
