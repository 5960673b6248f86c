"""The submitter's Python version travels with each task: the SDK's entry, the broker's row
(REST, Globus Compute's `user_runtime`, the Executor's direct-path record) and every
TaskMessage the broker publishes from it (hand-off and outbox), on a real SQLite database and
a real RabbitMQ virtual host."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest

from fnrelay import wire
from fnrelay.client import task_entry
from fnrelay.wire import globus, pyversion
from fnrelay_broker import direct, queues, tasks
from fnrelay_broker.amqp import declare_endpoint_queue, declare_exchanges
from fnrelay_broker.registry import create_task_group
from fnrelay_broker.routing import OutboxPublisher
from support.waiting import wait_for


def _submit(store, spec: dict, handoff=None) -> str:  # type: ignore[no-untyped-def]
    entry = {"function_id": store.function_id, "payload": "03\n1", **spec}
    answer = tasks.submit(store.db, store.user, str(uuid.uuid4()), store.endpoint_id, None,
                          [entry], handoff=handoff)
    return answer["task_ids"][0]


def test_the_sdk_names_its_own_minor_version_in_each_entry() -> None:
    entry = task_entry(str(uuid.uuid4()), (1,), {})
    assert entry["python_version"] == pyversion.here()


@pytest.mark.parametrize(("text", "expected"), [
    ("3.12", "3.12"), ("3.13.0", "3.13"), ("3.10.13 (main, Jan 1 2024) [GCC 12]", "3.10"),
    ("3", None), ("", None), (None, None), (312, None)])
def test_major_minor_reads_versions_and_sys_version(text, expected) -> None:  # type: ignore[no-untyped-def]
    assert pyversion.major_minor(text) == expected


def test_a_stored_task_forwards_its_version_through_hand_off_and_outbox(task_store) -> None:  # type: ignore[no-untyped-def]
    held: list[tasks.Handoff] = []
    tid = _submit(task_store, {"python_version": "3.13"}, held.append)
    assert [m.python_version for m in held[0].messages] == ["3.13"]
    [msg] = tasks.task_messages(task_store.db, [tid])
    assert msg.python_version == "3.13"
    unknown = _submit(task_store, {})
    assert tasks.task_messages(task_store.db, [unknown])[0].python_version is None


def test_the_version_survives_the_wire_encoding() -> None:
    msg = wire.TaskMessage(task_id="t", function_id="f", function="04\nx", payload="03\n1",
                           python_version="3.10")
    assert wire.decode_tasks(wire.encode_tasks([msg]))[0].python_version == "3.10"
    old = wire.decode_tasks(b'{"v":1,"tasks":[{"task_id":"t","function_id":"f",'
                            b'"function":"x","payload":"y"}]}')
    assert old[0].python_version is None


def test_a_globus_compute_task_takes_it_from_user_runtime(task_store) -> None:  # type: ignore[no-untyped-def]
    body = {"tasks": {task_store.function_id: ["1\na1\nk"]},  # a packed buffer: args, kwargs
            "user_runtime": {"python_version": "3.12.1 (main) [GCC]",
                             "python": {"version": "3.12.1"}}}
    [entry] = globus.submit_entries(body)
    assert entry["python_version"] == "3.12"
    body["user_runtime"] = {"python_version": "3.13.0 (main, Oct 2024)"}
    assert globus.submit_entries(body)[0]["python_version"] == "3.13"
    del body["user_runtime"]
    assert globus.submit_entries(body)[0]["python_version"] is None


def test_a_direct_path_record_keeps_the_version_for_re_publishing(task_store) -> None:  # type: ignore[no-untyped-def]
    group = create_task_group(task_store.db, task_store.user, None, task_store.endpoint_id)
    msg = wire.TaskMessage(task_id=str(uuid.uuid4()), function_id=task_store.function_id,
                           function="04\nbody", payload="03\n[[1],{}]", direct=True,
                           task_group_id=group, python_version="3.12")
    direct.record(task_store.db, task_store.endpoint_id, group, [msg])
    assert tasks.task_messages(task_store.db, [msg.task_id])[0].python_version == "3.12"


def test_the_published_task_message_carries_it(task_store, new_vhost) -> None:  # type: ignore[no-untyped-def]
    url = new_vhost("fnrelay-pyversion")
    names = queues.load(task_store.db)
    publisher = OutboxPublisher(task_store.db, url, names)
    publisher.start()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        declare_exchanges(ch)
        queue = declare_endpoint_queue(ch, names, task_store.endpoint_id)
        _submit(task_store, {"python_version": "3.10"}, publisher.handoff)

        def poll() -> list[wire.TaskMessage] | None:
            method, _, body = ch.basic_get(queue, auto_ack=True)
            return None if method is None else wire.decode_tasks(body)
        assert [m.python_version for m in wait_for(poll, "the task message")] == ["3.10"]
    finally:
        conn.close()
        publisher.stop()


def test_rest_submit_stores_a_valid_version_and_refuses_others(api) -> None:  # type: ignore[no-untyped-def]
    endpoint_id, function_id = api.endpoint(), api.function()

    def submit(version: object) -> Any:
        body = {"endpoint_id": endpoint_id, "tasks": [
            {"function_id": function_id, "payload": "03\n[[1],{}]", "python_version": version}]}
        return api("POST", "/submit", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})

    for bad in ("banana", "3", "3.12.1; drop", 312):
        assert submit(bad).status_code == 422, bad
    assert submit("3.13").status_code == 200
    assert submit(None).status_code == 200
