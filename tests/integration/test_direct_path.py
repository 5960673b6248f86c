"""The direct path: an Executor publishes tasks straight to its own endpoint's queue and takes
results straight from it, while the broker records both (fnrelay.direct, broker direct.py).

Real processes throughout (the session's broker has per-party RabbitMQ accounts, so the direct
path is on); raw pika plays a task group or an endpoint with the credentials the broker hands
out, to check what RabbitMQ and the broker refuse.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pika
import pika.exceptions
import pytest
import requests

from fnrelay import Client, Executor, errors, serialize, wire
from fnrelay.client import task_entry
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from fnrelay.direct import task_messages
from support.direct_path import direct_ready
from support.endpoint_peer import connected, result_message, status_message
from support.session import MARKER
from support.waiting import wait_for, wait_recorded

WAIT = 120.0
DIRECT_DETAIL = "published to the endpoint by the Executor (direct path)"
#: The payload limit of the `limited` broker: small, so tasks near it are cheap to run.
LIMIT = 64 * 1024


def add(a, b):  # type: ignore[no-untyped-def]
    return a + b


def length(text):  # type: ignore[no-untyped-def]
    return len(text)


def slow_genuine():  # type: ignore[no-untyped-def]
    import time

    time.sleep(3)
    return "genuine"


def _registration(broker_url: str, token: str) -> dict:
    """A new plain endpoint record (no process): the broker's answer (its id, its own
    account's AMQP URL, its task queue)."""
    r = requests.post(f"{broker_url}/v1/endpoints", json={"name": "peer", "metadata": {}},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    r.raise_for_status()
    return r.json()


def _register_endpoint(broker_url: str, token: str) -> tuple[str, str]:
    """A plain endpoint record (no process) and its own account's AMQP URL."""
    reg = _registration(broker_url, token)
    return reg["endpoint_id"], reg["amqp_url"]


@contextlib.contextmanager
def _publisher(url: str) -> Iterator[Callable[[str, str, bytes, str], None]]:
    """publish(exchange, key, body, kind) as the account of `url`, confirmed (raises what
    RabbitMQ refuses), on one connection opened beforehand."""
    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.confirm_delivery()

        def publish(exchange: str, key: str, body: bytes, kind: str) -> None:
            ch.basic_publish(exchange, key, body, pika.BasicProperties(
                type=kind, delivery_mode=2, content_type=wire.CONTENT_TYPE,
                user_id=params.credentials.username))

        yield publish
    finally:
        if conn.is_open:
            conn.close()


def _publish(url: str, exchange: str, key: str, body: bytes, kind: str) -> None:
    with _publisher(url) as publish:
        publish(exchange, key, body, kind)


def _tasks_body(client: Client, fn, args: tuple, group_id: str,  # type: ignore[no-untyped-def]
                body: str | None = None) -> tuple[str, bytes]:
    """One direct-path `tasks` message of `fn(*args)` (its code replaced by `body`)."""
    fid = client.register_function(fn)
    tid = str(uuid.uuid4())
    msgs = task_messages([task_entry(fid, args, {})], [tid],
                         [body or client.function_body(fid)], group_id)  # type: ignore[list-item]
    return tid, wire.encode_tasks(msgs)


def test_executor_takes_the_direct_path_and_the_broker_records_every_step(client, endpoint_id):
    with direct_ready(Executor(endpoint_id, client=client)) as ex:
        futures = [ex.submit(add, i, 1) for i in range(20)]
        assert [f.result(WAIT) for f in futures] == list(range(1, 21))
        assert ex._group is not None and ex._group["submit"] == {
            "exchange": wire.SUBMIT_EXCHANGE, "routing_key": endpoint_id,
            "payload_limit": 10 * 1024 * 1024}
        group_id = ex.task_group_id
    record = wait_recorded(client, futures[0].task_id, "success")
    steps = [(h["status"], h["detail"]) for h in record["history"]]
    assert steps[:2] == [("received", ""), ("waiting-for-endpoint", DIRECT_DETAIL)]
    assert [s for s, _ in steps[2:]] == ["running", "success"]
    times = [h["time"] for h in record["history"]]
    assert times == sorted(times)
    assert serialize.deserialize(record["result"]) == 1
    # The group knows its tasks in submission order, and a re-attached Executor gets them.
    assert client.get_task_group(group_id)["task_ids"] == [f.task_id for f in futures]
    with Executor(endpoint_id, client=client, task_group_id=group_id) as again:
        assert [f.result(WAIT) for f in again.reload_tasks()] == list(range(1, 21))


def nap(seconds):  # type: ignore[no-untyped-def]
    import time
    time.sleep(seconds)
    return seconds


def test_a_direct_task_history_has_the_times_its_steps_happened(client, endpoint_id):
    # A task shorter than the broker's hold of its record is written with its result in one
    # row: its steps must still have their own times, not all the time of that write.
    with direct_ready(Executor(endpoint_id, client=client)) as ex:
        future = ex.submit(nap, 0.2)
        assert future.result(WAIT) == 0.2
    record = wait_recorded(client, future.task_id, "success")
    at = {h["status"]: h["time"] for h in record["history"]}
    assert list(at) == ["received", "waiting-for-endpoint", "running", "success"]
    assert list(at.values()) == sorted(at.values())
    # Running from about when the worker started (not before the record reached the broker),
    # done when the endpoint says it ended: the nap lies between them.
    assert at["success"] == record["details"]["completed"] == record["completed"]
    assert at["success"] - at["running"] >= 0.1


def test_direct_off_submits_over_rest(client, endpoint_id):
    with Executor(endpoint_id, client=client, direct=False) as ex:
        future = ex.submit(add, 2, 3)
        assert future.result(WAIT) == 5
    record = wait_recorded(client, future.task_id, "success")
    assert DIRECT_DETAIL not in [h["detail"] for h in record["history"]]


def test_only_the_owner_gets_the_direct_path(client, other_client, endpoint_id):
    theirs = other_client.create_task_group(endpoint_id=endpoint_id)
    assert theirs["submit"] is None
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        _publish(theirs["amqp_url"], wire.SUBMIT_EXCHANGE, endpoint_id, b"{}",
                 wire.MSG_TASKS)
    assert e.value.reply_code == 403
    # Bob's Executor on Alice's endpoint falls back to REST, which refuses it as before.
    with Executor(endpoint_id, client=other_client) as ex:
        with pytest.raises(Exception, match="not found|404"):
            ex.submit(add, 1, 1).result(WAIT)


def test_a_group_account_publishes_only_to_its_own_endpoint(client, broker_url, alice_token,
                                                            endpoint_id):
    other_eid, _ = _register_endpoint(broker_url, alice_token)
    group = client.create_task_group(endpoint_id=endpoint_id)
    assert group["submit"]["routing_key"] == endpoint_id
    for exchange, key in ((wire.SUBMIT_EXCHANGE, other_eid),
                          (wire.SUBMIT_EXCHANGE, other_eid + wire.RECORDS_SUFFIX),
                          (wire.SUBMIT_EXCHANGE, endpoint_id + ".other"),
                          (wire.TASKS_EXCHANGE, endpoint_id),
                          (wire.GROUPS_EXCHANGE, group["task_group_id"])):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            _publish(group["amqp_url"], exchange, key, b"{}", wire.MSG_TASKS)
        assert e.value.reply_code == 403, (exchange, key)


def test_records_go_to_the_broker_and_tasks_to_the_endpoint_only(client, broker_url, alice_token,
                                                                 amqp_url):
    """RabbitMQ stores a direct-path task once: the endpoint's queue gets the tasks message,
    the broker the records message, and neither gets the other."""
    reg = _registration(broker_url, alice_token)  # no process: its queue keeps what comes
    eid, queue = reg["endpoint_id"], reg["task_queue"]
    group = client.create_task_group(endpoint_id=eid)
    gid = group["task_group_id"]
    task_id, tasks = _tasks_body(client, add, (1, 2), gid)
    record_id, records = _tasks_body(client, add, (3, 4), gid)
    _publish(group["amqp_url"], wire.SUBMIT_EXCHANGE, eid, tasks, wire.MSG_TASKS)
    _publish(group["amqp_url"], wire.SUBMIT_EXCHANGE, eid + wire.RECORDS_SUFFIX, records,
             wire.MSG_TASKS)
    history = wait_recorded(client, record_id, "waiting-for-endpoint")["history"]
    assert history[-1]["detail"] == DIRECT_DETAIL
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        assert ch.basic_get(queue, auto_ack=True)[2] == tasks
        assert ch.basic_get(queue, auto_ack=True)[0] is None
    finally:
        conn.close()
    time.sleep(1.0)  # past the broker's hold and its retry of early results
    with pytest.raises(errors.NotFoundError):
        client.task_record(task_id)


def test_a_task_whose_records_never_came_is_recorded_from_its_result(client, endpoint_id):
    """An Executor that dies before it sent the broker its records: the endpoint runs the task
    and its result for the broker carries the record (without the arguments)."""
    group = client.create_task_group(endpoint_id=endpoint_id)
    tid, body = _tasks_body(client, add, (20, 22), group["task_group_id"])
    _publish(group["amqp_url"], wire.SUBMIT_EXCHANGE, endpoint_id, body, wire.MSG_TASKS)
    record = wait_recorded(client, tid, "success")
    assert serialize.deserialize(record["result"]) == 42
    assert record["function_id"] == client.register_function(add)
    steps = [(h["status"], h["detail"]) for h in record["history"]]
    assert steps[0] == ("received", "")
    assert steps[1][0] == "waiting-for-endpoint" and "recorded from the endpoint's result" in \
        steps[1][1]
    assert steps[-1][0] == "success"


def test_a_forged_result_from_another_endpoint_does_not_resolve_the_future(
        client, broker_url, alice_token, endpoint_id):
    intruder, intruder_url = _register_endpoint(broker_url, alice_token)
    with direct_ready(Executor(endpoint_id, client=client)) as ex:
        future = ex.submit(slow_genuine)
        wait_for(lambda: future.task_id, "the task id")
        gid = str(ex.task_group_id)
        forged = wire.encode_results([wire.ResultMessage(
            task_id=future.task_id, status="success", result=serialize.serialize("forged"),
            task_group_id=gid)])
        # As the broker (routing key = the group): refused by the intruder's topic permission.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            _publish(intruder_url, wire.GROUPS_EXCHANGE, wire.group_routing_key(gid),
                     forged, wire.MSG_RESULTS)
        assert e.value.reply_code == 403
        # As itself: allowed, but the group granted only its own endpoint, so it goes nowhere.
        _publish(intruder_url, wire.GROUPS_EXCHANGE,
                 wire.group_routing_key(gid, intruder), forged, wire.MSG_RESULTS)
        assert future.result(WAIT) == "genuine"
    record = wait_recorded(client, future.task_id, "success")
    assert serialize.deserialize(record["result"]) == "genuine"


def test_a_result_that_overtakes_its_task_record_is_still_recorded(client, broker_url,
                                                                   alice_token):
    eid, endpoint_url = _register_endpoint(broker_url, alice_token)
    group = client.create_task_group(endpoint_id=eid)
    gid = group["task_group_id"]
    tid, body = _tasks_body(client, add, (1, 2), gid)
    # Connected beforehand: the record must come within UNKNOWN_RETRY (0.5 s) of the result.
    with _publisher(group["amqp_url"]) as publish, connected(endpoint_url, eid) as send:
        send(result_message(tid, gid, serialize.serialize(3)))
        time.sleep(0.1)  # the result is in the broker's queue first
        publish(wire.SUBMIT_EXCHANGE, eid + wire.RECORDS_SUFFIX, body,
                wire.MSG_TASKS)
    record = wait_recorded(client, tid, "success")
    assert serialize.deserialize(record["result"]) == 3
    assert [h["status"] for h in record["history"]] == [
        "received", "waiting-for-endpoint", "success"]


def test_a_direct_result_that_overtakes_its_record_waits_for_it_and_is_written_with_it(
        client, broker_url, alice_token):  # type: ignore[no-untyped-def]
    """The Executor sends its records every RECORDS_LINGER, so the endpoint's copy of a short
    task's result often reaches the broker first: it waits (up to RECORD_HOLD) for the record,
    and both go into the ledger in one write, not a write for the record and another for the
    result half a second later; each step keeps its own time."""
    eid, endpoint_url = _register_endpoint(broker_url, alice_token)
    group = client.create_task_group(endpoint_id=eid)
    gid = group["task_group_id"]
    tid, body = _tasks_body(client, add, (1, 2), gid)
    # Connected beforehand: the record must follow well within RECORD_HOLD (0.25 s), which
    # a new connection on a busy CI machine could take on its own.
    with _publisher(group["amqp_url"]) as publish, connected(endpoint_url, eid) as send:
        send(result_message(tid, gid, serialize.serialize(3), forwarded=True))
        # Any other message in between flushes what the broker holds (on a busy broker,
        # another endpoint's heartbeat): the result must still wait for its record.
        send(status_message(str(uuid.uuid4()), "running", ""))
        time.sleep(0.05)  # both are in the broker's queue first
        publish(wire.SUBMIT_EXCHANGE, eid + wire.RECORDS_SUFFIX, body,
                wire.MSG_TASKS)
    record = wait_recorded(client, tid, "success")
    assert serialize.deserialize(record["result"]) == 3
    steps = record["history"]
    assert [h["status"] for h in steps] == ["received", "waiting-for-endpoint", "success"]
    received, published, done = (h["time"] for h in steps)
    # Received and published when the record reached the broker (the direct path publishes
    # to the endpoint first); done when the result was written, which it did not say.
    assert received == published <= done, steps


def test_a_status_that_overtakes_its_task_record_is_still_recorded(client, broker_url,
                                                                   alice_token):
    """The Executor's records come batched: an endpoint's first status (a batch job's
    "waiting-for-nodes") may reach the broker before the task's record."""
    eid, endpoint_url = _register_endpoint(broker_url, alice_token)
    group = client.create_task_group(endpoint_id=eid)
    tid, body = _tasks_body(client, add, (1, 2), group["task_group_id"])
    # Connected beforehand: the record must come within UNKNOWN_RETRY (0.5 s) of the status.
    with _publisher(group["amqp_url"]) as publish, connected(endpoint_url, eid) as send:
        send(status_message(tid, "waiting-for-nodes", "slurm job 42"))
        time.sleep(0.1)  # the status is in the broker's queue first
        publish(wire.SUBMIT_EXCHANGE, eid + wire.RECORDS_SUFFIX, body,
                wire.MSG_TASKS)
    record = wait_recorded(client, tid, "waiting-for-nodes")
    assert record["history"][-1]["detail"] == "slurm job 42"


def test_status_updates_of_a_record_held_for_its_result_come_before_the_result(
        client, broker_url, alice_token):  # type: ignore[no-untyped-def]
    """The broker holds a direct-path record a moment for its result; a task that reports a
    status meanwhile (a lost worker and its retry) keeps those steps, before its result."""
    eid, endpoint_url = _register_endpoint(broker_url, alice_token)
    group = client.create_task_group(endpoint_id=eid)
    gid = group["task_group_id"]
    tid, body = _tasks_body(client, add, (1, 2), gid)
    with _publisher(group["amqp_url"]) as publish, connected(endpoint_url, eid) as send:
        publish(wire.SUBMIT_EXCHANGE, eid + wire.RECORDS_SUFFIX, body, wire.MSG_TASKS)
        time.sleep(0.05)  # the record is in the broker, held for its result (RECORD_HOLD)
        send(status_message(tid, "running", "worker 1"))
        send(status_message(tid, "waiting-for-endpoint", "retry 1 of 3: worker lost"))
        send(result_message(tid, gid, serialize.serialize(3), forwarded=True))
    record = wait_recorded(client, tid, "success")
    assert [(h["status"], h["detail"]) for h in record["history"]] == [
        ("received", ""), ("waiting-for-endpoint", DIRECT_DETAIL), ("running", "worker 1"),
        ("waiting-for-endpoint", "retry 1 of 3: worker lost"), ("success", "")]


def test_a_status_that_overtakes_its_record_is_recorded_before_the_result(
        client, broker_url, alice_token):  # type: ignore[no-untyped-def]
    eid, endpoint_url = _register_endpoint(broker_url, alice_token)
    group = client.create_task_group(endpoint_id=eid)
    gid = group["task_group_id"]
    tid, body = _tasks_body(client, add, (1, 2), gid)
    with _publisher(group["amqp_url"]) as publish, connected(endpoint_url, eid) as send:
        send(status_message(tid, "running", "worker 1"))
        time.sleep(0.1)  # the status is in the broker's queue first
        publish(wire.SUBMIT_EXCHANGE, eid + wire.RECORDS_SUFFIX, body, wire.MSG_TASKS)
        send(result_message(tid, gid, serialize.serialize(3), forwarded=True))
    record = wait_recorded(client, tid, "success")
    assert [h["status"] for h in record["history"]] == [
        "received", "waiting-for-endpoint", "running", "success"]


def test_code_that_does_not_match_its_function_id_is_recorded_as_failed(client, broker_url,
                                                                       alice_token):
    eid, _ = _register_endpoint(broker_url, alice_token)
    group = client.create_task_group(endpoint_id=eid)
    other_code = serialize.serialize_function(slow_genuine)
    tid, body = _tasks_body(client, add, (1, 2), group["task_group_id"], body=other_code)
    _publish(group["amqp_url"], wire.SUBMIT_EXCHANGE, eid + wire.RECORDS_SUFFIX, body,
             wire.MSG_TASKS)
    record = wait_recorded(client, tid, "failed")
    assert "does not match" in record["exception"]["message"]



def test_results_are_acknowledged_in_batches_and_none_is_left_unacknowledged(
        client, endpoint_id, rabbitmq):  # type: ignore[no-untyped-def]
    """The Executor acks its result messages together (every 25, and whenever its queue is
    quiet): 30 lone calls leave nothing unacknowledged, or ready to come again, in its queue."""
    with Executor(endpoint_id, client=client) as ex:
        for i in range(30):
            assert ex.submit(add, i, 1).result(WAIT) == i + 1
        queue = ex._group["queue"]  # its group's queue, as the broker told the Executor
        url = f"{rabbitmq.management_url.rstrip('/')}/api/queues/%2F/{queue}"

        def settled() -> bool:  # the management API's counts lag by up to 5 s
            r = requests.get(url, auth=rabbitmq.admin_auth, timeout=10)
            r.raise_for_status()
            q = r.json()
            return (q.get("messages_unacknowledged"), q.get("messages_ready")) == (0, 0) and \
                q.get("message_stats", {}).get("deliver_get", 0) >= 30
        wait_for(settled, "every result message acknowledged", WAIT)


# --- the payload limit on the direct path -------------------------------------------------------
@dataclass
class Limited:
    """A broker with payload limit LIMIT, alice's token on it and her endpoint."""

    broker: BrokerServer
    amqp_url: str
    token: str
    endpoint: LocalEndpoint

    def client(self) -> Client:
        return Client(self.broker.url, self.token)


@pytest.fixture(scope="module")
def limited(tmp_path_factory, new_vhost, rabbitmq) -> Iterator[Limited]:  # type: ignore[no-untyped-def]
    """A broker of its own (own virtual host, per-party accounts: the direct path is on) with
    `--payload-limit LIMIT`, and an endpoint on it."""
    tmp = tmp_path_factory.mktemp("direct-limit")
    amqp = new_vhost("fnrelay-direct-limit")
    broker = BrokerServer(tmp / "broker", amqp, marker=MARKER,
                          management_url=rabbitmq.management_url,
                          extra_args=["--heartbeat-period", "1", "--payload-limit", str(LIMIT)])
    endpoint = None
    try:
        broker.start()
        token = broker.add_user("alice")
        endpoint = LocalEndpoint(tmp / "endpoint", "limited", broker.url, token,
                                 marker=MARKER).configure(max_workers=2)
        endpoint.start(foreground=True)
        yield Limited(broker, amqp, token, endpoint)
    finally:
        if endpoint is not None:
            endpoint.stop()
        broker.stop()


def _text_for(rest_bytes: int, function_id: str, endpoint_id: str, group_id: str) -> str:
    """An argument that makes the POST /v1/submit body of `length(text)` alone (as requests
    encodes it) exactly `rest_bytes` long: what the broker's payload limit counts."""

    def size(text: str) -> int:
        body = {"endpoint_id": endpoint_id, "task_group_id": group_id,
                "tasks": [task_entry(function_id, (text,), {})]}
        return len(json.dumps(body).encode())

    return "x" * (rest_bytes - size(""))


def test_a_task_over_the_payload_limit_fails_on_the_direct_path_and_the_others_run(limited):
    client = limited.client()
    with direct_ready(Executor(limited.endpoint.endpoint_id, client=client)) as ex:
        small = ex.submit(length, "small")
        big = ex.submit(length, "x" * LIMIT)
        after = ex.submit(length, "after")
        assert (small.result(WAIT), after.result(WAIT)) == (5, 5)
        with pytest.raises(errors.PayloadTooLargeError, match=f"limit of {LIMIT} bytes"):
            big.result(WAIT)
        assert ex._group is not None and ex._group["submit"]["payload_limit"] == LIMIT
    assert big.task_id is None  # never sent
    details = [h["detail"] for h in wait_recorded(client, small.task_id, "success")["history"]]
    assert DIRECT_DETAIL in details
    with pytest.raises(errors.PayloadTooLargeError):  # REST refuses it the same way
        client.run("x" * LIMIT, endpoint_id=limited.endpoint.endpoint_id,
                   function_id=client.register_function(length))


def test_the_direct_path_takes_exactly_what_rest_takes(limited):
    """A task whose REST request is LIMIT bytes runs on both paths; one byte more, neither
    takes it."""
    client = limited.client()
    eid, fid = limited.endpoint.endpoint_id, client.register_function(length)
    group = client.create_task_group()["task_group_id"]  # a group id as long as an Executor's
    at, over = (_text_for(n, fid, eid, group) for n in (LIMIT, LIMIT + 1))
    (task_id,) = client.submit(eid, [task_entry(fid, (at,), {})], group)["task_ids"]
    with pytest.raises(errors.PayloadTooLargeError):
        client.submit(eid, [task_entry(fid, (over,), {})], group)
    with direct_ready(Executor(eid, client=client)) as ex:
        direct_at, direct_over = ex.submit(length, at), ex.submit(length, over)
        assert direct_at.result(WAIT) == len(at)
        with pytest.raises(errors.PayloadTooLargeError, match=f"{LIMIT + 1} bytes"):
            direct_over.result(WAIT)
    assert serialize.deserialize(wait_recorded(client, task_id, "success")["result"]) == len(at)


def test_direct_messages_of_several_tasks_stay_within_the_payload_limit(limited):
    """Eight tasks of 0.3 LIMIT each, queued together: at most three share a message."""
    reg = _registration(limited.broker.url, limited.token)  # no process: tasks stay
    eid = reg["endpoint_id"]
    client = limited.client()
    client.register_function(length)
    text = "x" * (LIMIT * 3 // 10)
    with direct_ready(Executor(eid, client=client)) as ex:
        with ex._lock:  # every task is queued before the submitter sends one (in <= 2 batches)
            futures = [ex.submit(length, text) for _ in range(8)]
        try:
            bodies = _drain(limited.amqp_url, reg["task_queue"], 8)
        finally:  # no endpoint runs them: else shutting the Executor down would wait forever
            assert all(f.cancel() for f in futures)
    assert max(len(b) for b in bodies) <= LIMIT
    assert max(len(wire.decode_tasks(b)) for b in bodies) >= 2


def _drain(amqp_url: str, queue: str, tasks: int) -> list[bytes]:
    """Messages taken from `queue` until they hold `tasks` tasks."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    bodies: list[bytes] = []
    try:
        ch = conn.channel()

        def all_taken() -> bool:
            body = ch.basic_get(queue, auto_ack=True)[2]
            if body is not None:
                bodies.append(body)
            return sum(len(wire.decode_tasks(b)) for b in bodies) >= tasks
        wait_for(all_taken, f"{tasks} tasks in {queue}")
    finally:
        conn.close()
    return bodies
