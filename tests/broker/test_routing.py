"""Tasks out to endpoints and results back, through a real broker process and RabbitMQ.

Raw pika plays the endpoint: it reads its task queue and publishes to fnrelay.results.
"""

from __future__ import annotations

import json
import math
import socket
import uuid

import pika

from fnrelay import wire
from support.waiting import wait_for


def _get(ch, queue: str, kind: str, what: str):  # type: ignore[no-untyped-def]
    """The next message of type `kind` on `queue` (acked), waiting for it."""

    def poll():  # type: ignore[no-untyped-def]
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return None
        assert props.type == kind, (props.type, body)
        assert props.delivery_mode == 2 and props.content_type == wire.CONTENT_TYPE
        return body

    return wait_for(poll, what)


def _queue_exists(conn, queue: str) -> bool:  # type: ignore[no-untyped-def]
    """Passive declare on a throwaway channel (a 404 closes the channel it happens on)."""
    ch = conn.channel()
    try:
        ch.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    ch.close()
    return True


def _publish(ch, endpoint_id: str, kind: str, body: bytes) -> None:  # type: ignore[no-untyped-def]
    ch.basic_publish(
        wire.RESULTS_EXCHANGE, endpoint_id, body,
        pika.BasicProperties(type=kind, delivery_mode=2, content_type=wire.CONTENT_TYPE),
    )


def _result(task_id: str, value: str = "03\n42") -> bytes:
    return wire.encode_results(
        [wire.ResultMessage(task_id=task_id, status="success", result=value,
                                details={"python": "3"})]
    )


def _status_of(api, task_id: str, status: str):  # type: ignore[no-untyped-def]
    return wait_for(lambda: (t := api.ok("GET", f"/tasks/{task_id}"))["status"] == status and t,
                    f"task {task_id} to be {status}")


def test_task_reaches_the_endpoint_queue_with_its_function(api, amqp):
    reg = api.register()
    eid = reg["endpoint_id"]
    fid = api.function("01\nthe-function-body")
    answer = api.submit(eid, fid, n=3)
    body = _get(amqp, reg["task_queue"], wire.MSG_TASKS, "the task message")
    msgs = wire.decode_tasks(body)
    assert [m.task_id for m in msgs] == answer["task_ids"]
    assert {m.function for m in msgs} == {"01\nthe-function-body"}
    assert {m.function_id for m in msgs} == {fid}
    assert [m.payload for m in msgs] == ["03\n[0]", "03\n[1]", "03\n[2]"]
    assert {m.task_group_id for m in msgs} == {answer["task_group_id"]}
    _status_of(api, answer["task_ids"][0], "waiting-for-endpoint")


def test_a_tasks_own_max_retries_reaches_the_endpoint(api, amqp):
    reg, fid = api.register(), api.function()
    eid = reg["endpoint_id"]
    tasks = [{"function_id": fid, "payload": "03\n[0]", "max_retries": 0},
             {"function_id": fid, "payload": "03\n[1]"}]
    bad = api("POST", "/submit", json={"endpoint_id": eid, "tasks": [
        {"function_id": fid, "payload": "03\n[0]", "max_retries": -1}]},
        headers={"Idempotency-Key": str(uuid.uuid4())})
    assert bad.status_code == 422
    api.ok("POST", "/submit", json={"endpoint_id": eid, "tasks": tasks},
           headers={"Idempotency-Key": str(uuid.uuid4())})
    msgs = wire.decode_tasks(
        _get(amqp, reg["task_queue"], wire.MSG_TASKS, "the task message"))
    assert [m.max_retries for m in msgs] == [0, None]


def test_result_is_recorded_once_and_forwarded_to_the_group(api, amqp, broker):
    reg, fid = api.register(), api.function()
    eid = reg["endpoint_id"]
    group = api.ok("POST", "/task_groups", json={})
    # The group's queue is named under the broker's secret, not after the group's id.
    assert group["queue"] == broker.names.group(group["task_group_id"])
    assert group["task_group_id"] not in group["queue"]
    tid = api.submit(eid, fid, group=group["task_group_id"])["task_ids"][0]
    _get(amqp, reg["task_queue"], wire.MSG_TASKS, "the task message")
    _status_of(api, tid, "waiting-for-endpoint")

    _publish(amqp, eid, wire.MSG_STATUS,
             wire.encode_status([wire.StatusUpdate(task_id=tid, status="running")]))
    _status_of(api, tid, "running")
    _publish(amqp, eid, wire.MSG_RESULTS, _result(tid, "03\n42"))
    done = _status_of(api, tid, "success")
    assert done["pending"] is False and done["result"] == "03\n42"
    assert done["details"] == {"python": "3"} and done["completed"]
    assert [h["status"] for h in done["history"]] == [
        "received", "waiting-for-endpoint", "running", "success"]

    forwarded = wire.decode_results(
        _get(amqp, group["queue"], wire.MSG_RESULTS, "the forwarded result"))
    assert [(r.task_id, r.status, r.result) for r in forwarded] == [(tid, "success", "03\n42")]

    # a duplicate (at-least-once delivery) changes nothing and is not forwarded again
    _publish(amqp, eid, wire.MSG_RESULTS, _result(tid, "03\n43"))
    marker = api.submit(eid, fid, group=group["task_group_id"])["task_ids"][0]
    _publish(amqp, eid, wire.MSG_RESULTS, _result(marker, "03\n1"))
    after = wire.decode_results(
        _get(amqp, group["queue"], wire.MSG_RESULTS, "the marker result"))
    assert [r.task_id for r in after] == [marker]  # the duplicate was not forwarded
    again = api.ok("GET", f"/tasks/{tid}")
    assert again["result"] == "03\n42" and len(again["history"]) == 4


def test_result_from_another_endpoint_is_ignored(api, other_api, amqp):
    eid, fid = api.endpoint(), api.function()
    intruder = other_api.endpoint()
    tid = api.submit(eid, fid)["task_ids"][0]
    _status_of(api, tid, "waiting-for-endpoint")
    _publish(amqp, intruder, wire.MSG_RESULTS, _result(tid, "03\n666"))
    _publish(amqp, intruder, wire.MSG_STATUS,
             wire.encode_status([wire.StatusUpdate(task_id=tid, status="running")]))
    _publish(amqp, eid, wire.MSG_RESULTS, _result(tid, "03\n7"))  # the genuine one
    done = _status_of(api, tid, "success")
    assert done["result"] == "03\n7"
    assert "running" not in [h["status"] for h in done["history"]]


def test_malformed_message_does_not_stop_the_consumer(api, amqp):
    eid, fid = api.endpoint(), api.function()
    tid = api.submit(eid, fid)["task_ids"][0]
    _publish(amqp, eid, wire.MSG_RESULTS, b"{not json")
    _publish(amqp, eid, wire.MSG_RESULTS, b'{"v": 1, "results": [{"nope": 1}]}')
    _publish(amqp, eid, wire.MSG_RESULTS, b"[" * 100_000)  # RecursionError in json
    _publish(amqp, eid, wire.MSG_RESULTS, _result(tid))
    _status_of(api, tid, "success")


def test_numbers_json_has_not_from_an_endpoint_keep_the_result_readable(api, amqp):
    """Python's json writes and reads NaN/Infinity, PostgreSQL's json and JSON responses refuse
    them: the result is kept, stored with null in their place (on PostgreSQL the write failed
    and the consumer retried it forever, holding up every later message)."""
    eid, fid = api.endpoint(), api.function()
    tid = api.submit(eid, fid)["task_ids"][0]
    body = wire.encode_results(
        [wire.ResultMessage(task_id=tid, status="success", result="03\n42",
                                details={"seconds": math.nan, "limits": [math.inf, -math.inf],
                                         "huge": 1.0})])
    _publish(amqp, eid, wire.MSG_RESULTS, body.replace(b'"huge":1.0', b'"huge":1e999'))
    record = _status_of(api, tid, "success")
    assert record["details"] == {"seconds": None, "limits": [None, None], "huge": None}
    assert record["result"] == "03\n42"
    beat = json.dumps({"endpoint_id": eid, "time": wire.now(), "info": {"load": math.nan}})
    _publish(amqp, eid, wire.MSG_HEARTBEAT, beat.encode())
    wait_for(lambda: api.ok("GET", f"/endpoints/{eid}/status")["status"] == "online",
             "the endpoint to be online")


def test_cancel_of_a_queued_task_tells_the_endpoint_and_the_group(api, amqp):
    reg, fid = api.register(), api.function()
    eid = reg["endpoint_id"]
    group = api.ok("POST", "/task_groups", json={})
    tid = api.submit(eid, fid, group=group["task_group_id"])["task_ids"][0]
    _get(amqp, reg["task_queue"], wire.MSG_TASKS, "the task message")
    _status_of(api, tid, "waiting-for-endpoint")
    assert api.ok("POST", f"/tasks/{tid}/cancel") == {"task_id": tid, "status": "cancelled"}
    cancel = json.loads(
        _get(amqp, reg["task_queue"], wire.MSG_CANCEL, "the cancel message"))
    assert cancel["task_ids"] == [tid]
    forwarded = wire.decode_results(
        _get(amqp, group["queue"], wire.MSG_RESULTS, "the cancelled result"))
    assert [(r.task_id, r.status) for r in forwarded] == [(tid, "cancelled")]
    # a late result does not undo the cancel; cancelling again answers the terminal state
    _publish(amqp, eid, wire.MSG_RESULTS, _result(tid))
    assert api.ok("POST", f"/tasks/{tid}/cancel")["status"] == "cancelled"
    assert api.ok("GET", f"/tasks/{tid}")["pending"] is False


def test_heartbeat_online_then_stopping_is_offline(api, amqp):
    eid = api.endpoint()
    assert api.ok("GET", f"/endpoints/{eid}/status")["status"] == "offline"

    def beat(state: str) -> None:
        body = json.dumps({"endpoint_id": eid, "time": wire.now(), "info": {"state": state}})
        _publish(amqp, eid, wire.MSG_HEARTBEAT, body.encode())

    beat("online")
    st = wait_for(lambda: (s := api.ok("GET", f"/endpoints/{eid}/status"))["status"] == "online"
                  and s, "the endpoint to be online")
    assert st["last_heartbeat"] is not None
    beat("stopping")
    wait_for(lambda: api.ok("GET", f"/endpoints/{eid}/status")["status"] == "offline",
             "the endpoint to be offline")


def test_delete_endpoint_fails_its_unfinished_tasks(api, amqp):
    eid, fid = api.endpoint(), api.function()
    tid = api.submit(eid, fid)["task_ids"][0]
    assert api.ok("DELETE", f"/endpoints/{eid}") == {"endpoint_id": eid, "deleted": True}
    failed = _status_of(api, tid, "failed")
    assert "deleted" in failed["exception"]["message"]
    assert api("GET", f"/endpoints/{eid}/status").status_code == 404


def test_tasks_accepted_while_rabbitmq_is_down_go_out_when_it_returns(
    start_broker, new_vhost
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    down = start_broker(f"amqp://guest:guest@127.0.0.1:{closed_port}/")
    api = down.api()
    reg, fid = api.register(), api.function()  # registration works without RabbitMQ
    eid, queue = reg["endpoint_id"], reg["task_queue"]
    answer = api.submit(eid, fid, n=2)
    tid = answer["task_ids"][0]
    assert api.ok("GET", f"/tasks/{tid}")["status"] == "received"
    assert down.stop() == 0  # SIGTERM stops cleanly

    # Same database, RabbitMQ reachable: a vhost of its own, as another deployment's broker
    # (the session's) may hold the shared one.
    amqp_url = new_vhost("fnrelay-outbox-test")
    back = start_broker(amqp_url, down.db_url)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    amqp = conn.channel()
    # The new broker declares the endpoint's queue before its first publish; reading a queue
    # that does not exist yet would close the test's channel.
    wait_for(lambda: _queue_exists(conn, queue), "the endpoint queue")
    body = _get(amqp, queue, wire.MSG_TASKS, "the queued tasks")
    conn.close()
    assert [m.task_id for m in wire.decode_tasks(body)] == answer["task_ids"]
    _status_of(back.api(api.http.headers["Authorization"].split()[1]), tid,
               "waiting-for-endpoint")
    assert str(uuid.UUID(tid)) == tid
