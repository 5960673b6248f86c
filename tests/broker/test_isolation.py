"""Nobody reads or forges what is not theirs on RabbitMQ.

A broker started with `--amqp-management-url` gives every endpoint (and child endpoint) and
every task group reader its own RabbitMQ account. Raw pika then plays endpoint A with A's own
credentials (as handed out by the broker) and tries to reach endpoint B's tasks and results.
"""

from __future__ import annotations

import uuid

import pika
import pika.exceptions
import pytest

from fnrelay import wire
from support.waiting import wait_for

#: Not the default (10 MB): the direct-path grant must carry the configured one.
PAYLOAD_LIMIT = 3_000_000


@pytest.fixture(scope="module")
def amqp_url(new_vhost) -> str:  # type: ignore[no-untyped-def]
    """A virtual host of this module's broker alone (brokers sharing one would consume each
    other's results queue)."""
    return new_vhost("fnrelay-isolation-test")


@pytest.fixture(scope="module")
def iso_broker(start_broker, amqp_url, rabbitmq):  # type: ignore[no-untyped-def]
    """A broker of its own that makes per-party RabbitMQ accounts."""
    return start_broker(amqp_url, None, "--amqp-management-url", rabbitmq.management_url,
                        "--payload-limit", str(PAYLOAD_LIMIT))


@pytest.fixture
def alice(iso_broker):  # type: ignore[no-untyped-def]
    return iso_broker.api()


@pytest.fixture
def bob(iso_broker):  # type: ignore[no-untyped-def]
    return iso_broker.api()


def _register(api, metadata: dict | None = None) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    reg = api.register(metadata)
    return reg["endpoint_id"], reg["amqp_url"]


class As:
    """A pika connection with someone's credentials; each attempt on a fresh channel (a
    refused operation closes the channel it happens on)."""

    def __init__(self, url: str):
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.user = pika.URLParameters(url).credentials.username

    def refused(self, action) -> int:  # type: ignore[no-untyped-def]
        """The AMQP reply code with which RabbitMQ refuses `action(channel)`."""
        ch = self.conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            action(ch)
        return e.value.reply_code

    def publish(self, exchange: str, key: str, body: bytes, kind: str,
                user_id: str | None = None) -> None:
        ch = self.conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, key, body, pika.BasicProperties(
            type=kind, delivery_mode=2, content_type=wire.CONTENT_TYPE,
            user_id=user_id or self.user))
        ch.close()

    def close(self) -> None:
        self.conn.close()


def _result(task_id: str, value: str, group: str) -> bytes:
    return wire.encode_results([wire.ResultMessage(
        task_id=task_id, status="success", result=value, task_group_id=group)])


def test_each_endpoint_gets_its_own_account(alice, bob, amqp_url):
    a_id, a_url = _register(alice)
    b_id, b_url = _register(bob)
    a_user = pika.URLParameters(a_url).credentials.username
    assert a_user == f"fnrelay-ep-{a_id}"
    assert pika.URLParameters(b_url).credentials.username == f"fnrelay-ep-{b_id}"
    assert a_user != pika.URLParameters(amqp_url).credentials.username
    # Re-registering hands out a new password: the old one stops working.
    _, again = _register_again(alice, a_id)
    assert again != a_url
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(a_url))
    As(again).close()


def _register_again(api, eid: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    reg = api.ok("PUT", f"/endpoints/{eid}", json={"name": "ep", "metadata": {}})
    return eid, reg["amqp_url"]


def test_endpoint_cannot_read_or_feed_another_endpoints_queue(alice, bob):
    a_reg, b_reg = alice.register(), bob.register()
    a_url, a_queue = a_reg["amqp_url"], a_reg["task_queue"]
    b_id, b_queue = b_reg["endpoint_id"], b_reg["task_queue"]
    a = As(a_url)
    try:
        assert a.refused(lambda ch: ch.basic_consume(b_queue, lambda *x: None)) == 403
        assert a.refused(lambda ch: ch.basic_get(b_queue)) == 403
        assert a.refused(lambda ch: ch.basic_publish(
            wire.TASKS_EXCHANGE, b_id, b"{}", pika.BasicProperties(type="tasks"))) == 403
        assert a.refused(lambda ch: ch.basic_publish("", b_queue, b"{}")) == 403
        # Nor may it declare or bind anything (the broker declares every queue).
        assert a.refused(lambda ch: ch.queue_declare("fnrelay.sneaky", durable=True)) == 403
        assert a.refused(lambda ch: ch.queue_bind(a_queue, wire.TASKS_EXCHANGE,
                                                  b_id)) == 403
        # Its own queue it may consume.
        ch = a.conn.channel()
        ch.basic_consume(a_queue, lambda *x: None)
        ch.close()
    finally:
        a.close()


def test_forged_results_for_another_endpoints_task_are_not_recorded(alice, bob, amqp_url):
    a_id, a_url = _register(alice)
    b_id, b_url = _register(bob)
    answer = bob.submit(b_id, bob.function())
    tid, group = answer["task_ids"][0], answer["task_group_id"]
    a, b = As(a_url), As(b_url)
    try:
        forged = _result(tid, "forged", group)
        # Routing key B from A's account: refused by B-only topic permissions.
        assert a.refused(lambda ch: ch.basic_publish(
            wire.RESULTS_EXCHANGE, b_id, forged, pika.BasicProperties(
                type=wire.MSG_RESULTS, user_id=a.user))) == 403
        # user_id B from A's connection: refused by RabbitMQ.
        assert a.refused(lambda ch: ch.basic_publish(
            wire.RESULTS_EXCHANGE, a_id, forged, pika.BasicProperties(
                type=wire.MSG_RESULTS, user_id=b.user))) == 406
        # Routing key A (allowed) about B's task: delivered, but the broker ignores it.
        a.publish(wire.RESULTS_EXCHANGE, a_id, forged, wire.MSG_RESULTS)
        # An account that may publish anything (the broker's own administrator) without B's
        # user_id: the broker drops it, whatever its routing key says.
        admin = As(amqp_url)
        try:
            ch = admin.conn.channel()
            ch.basic_publish(wire.RESULTS_EXCHANGE, b_id, forged, pika.BasicProperties(
                type=wire.MSG_RESULTS, delivery_mode=2, content_type=wire.CONTENT_TYPE))
        finally:
            admin.close()
        # B's genuine result, sent after the forgeries, is the one recorded.
        b.publish(wire.RESULTS_EXCHANGE, b_id, _result(tid, "genuine", group),
                  wire.MSG_RESULTS)
        rec = wait_for(lambda: (r := bob.ok("GET", f"/tasks/{tid}"))["status"] == "success"
                       and r, "B's result to be recorded")
        assert rec["result"] == "genuine"
    finally:
        a.close()
        b.close()


def test_heartbeats_count_only_from_the_endpoints_own_account(alice, bob, amqp_url):
    a_id, a_url = _register(alice)
    b_id, b_url = _register(bob)
    hb = wire.encode(wire.Heartbeat(endpoint_id=b_id, info={"state": "online"}))
    admin = As(amqp_url)
    try:  # no user_id: dropped, so B stays offline
        ch = admin.conn.channel()
        ch.basic_publish(wire.RESULTS_EXCHANGE, b_id, hb, pika.BasicProperties(
            type=wire.MSG_HEARTBEAT, delivery_mode=2))
    finally:
        admin.close()
    b = As(b_url)
    try:  # then a genuine one from A about A, and B's status is still offline
        a = As(a_url)
        a.publish(wire.RESULTS_EXCHANGE, a_id, wire.encode(wire.Heartbeat(
            endpoint_id=a_id, info={"state": "online"})), wire.MSG_HEARTBEAT)
        a.close()
        wait_for(lambda: alice.ok("GET", f"/endpoints/{a_id}/status")["status"] == "online",
                 "A's heartbeat")
        assert bob.ok("GET", f"/endpoints/{b_id}/status")["status"] == "offline"
        b.publish(wire.RESULTS_EXCHANGE, b_id, hb, wire.MSG_HEARTBEAT)
        wait_for(lambda: bob.ok("GET", f"/endpoints/{b_id}/status")["status"] == "online",
                 "B's own heartbeat")
    finally:
        b.close()


def test_group_reader_reads_only_its_own_group(alice, bob):
    g1 = alice.ok("POST", "/task_groups", json={})
    g2 = bob.ok("POST", "/task_groups", json={})
    r1 = As(g1["amqp_url"])
    try:
        assert r1.user == f"fnrelay-group-{g1['task_group_id']}"
        assert r1.refused(lambda ch: ch.basic_consume(g2["queue"], lambda *x: None)) == 403
        assert r1.refused(lambda ch: ch.basic_publish(
            wire.GROUPS_EXCHANGE, g2["task_group_id"], b"{}")) == 403
        ch = r1.conn.channel()
        ch.basic_consume(g1["queue"], lambda *x: None)
        ch.close()
    finally:
        r1.close()


def test_results_stream_to_the_group_reader(alice):
    eid, url = _register(alice)
    group = alice.ok("POST", "/task_groups", json={})
    tid = alice.submit(eid, alice.function(), group=group["task_group_id"])["task_ids"][0]
    ep, reader = As(url), As(group["amqp_url"])
    try:
        ep.publish(wire.RESULTS_EXCHANGE, eid,
                   _result(tid, "streamed", group["task_group_id"]), wire.MSG_RESULTS)
        ch = reader.conn.channel()

        def got():  # type: ignore[no-untyped-def]
            method, _, body = ch.basic_get(group["queue"], auto_ack=True)
            return body and wire.decode_results(body)

        results = wait_for(got, "the result on the group queue")
        assert [(r.task_id, r.result) for r in results] == [(tid, "streamed")]
    finally:
        ep.close()
        reader.close()


def test_child_endpoints_get_their_own_accounts_from_their_manager_only(alice, bob):
    reg = alice.register({"multi_user": True})
    manager, control = reg["endpoint_id"], reg["control_queue"]
    m = As(reg["amqp_url"])
    try:  # the manager reads its control queue, declared for it by the broker
        ch = m.conn.channel()
        ch.basic_consume(control, lambda *x: None)
        ch.close()
    finally:
        m.close()
    bob.submit(manager, bob.function())
    child = next(e["endpoint_id"] for e in bob.ok("GET", "/endpoints")["endpoints"]
                 if e["name"].startswith("ep/"))
    path = f"/endpoints/{manager}/children/{child}/credentials"
    creds = alice.ok("POST", path)
    c = As(creds["amqp_url"])
    try:
        assert c.user == f"fnrelay-ep-{child}"
        ch = c.conn.channel()
        ch.basic_consume(creds["task_queue"], lambda *x: None)
        ch.close()
        assert c.refused(lambda ch: ch.basic_consume(control, lambda *x: None)) == 403
    finally:
        c.close()
    assert bob("POST", path).status_code == 404  # not bob's manager
    assert alice("POST", f"/endpoints/{manager}/children/{uuid.uuid4()}/credentials"
                 ).status_code == 404


def _dead_letters(amqp_url: str) -> list[tuple[bytes, dict]]:
    """Take every message now in fnrelay.deadletter: (body, headers)."""
    admin = As(amqp_url)
    try:
        ch = admin.conn.channel()
        out = []
        while True:
            method, props, body = ch.basic_get(wire.DEADLETTER_QUEUE, auto_ack=True)
            if method is None:
                return out
            out.append((body, props.headers or {}))
    finally:
        admin.close()


def test_malformed_results_go_to_the_dead_letter_queue_with_the_reason(alice, amqp_url):
    a_id, a_url = _register(alice)
    answer = alice.submit(a_id, alice.function())
    tid, group = answer["task_ids"][0], answer["task_group_id"]
    a = As(a_url)
    try:
        truncated = _result(tid, "never", group)[:-7]
        a.publish(wire.RESULTS_EXCHANGE, a_id, truncated, wire.MSG_RESULTS)
        wrong_type = wire.encode({"v": 1, "results": [{"task_id": tid, "status": 3}]})
        a.publish(wire.RESULTS_EXCHANGE, a_id, wrong_type, wire.MSG_RESULTS)
        # The consumer goes on: a good result sent afterwards is recorded.
        a.publish(wire.RESULTS_EXCHANGE, a_id, _result(tid, "good", group),
                  wire.MSG_RESULTS)
        rec = wait_for(lambda: (r := alice.ok("GET", f"/tasks/{tid}"))["status"] == "success"
                       and r, "the good result to be recorded")
        assert rec["result"] == "good"
    finally:
        a.close()
    dead = {body: headers for body, headers in _dead_letters(amqp_url)}
    assert truncated in dead and wrong_type in dead
    assert "malformed" in dead[truncated][wire.DEADLETTER_REASON_HEADER]
    assert "'status' must be str" in dead[wrong_type][wire.DEADLETTER_REASON_HEADER]
    assert dead[truncated]["x-fnrelay-routing-key"] == a_id


def test_the_broker_sets_the_dead_letter_policy(iso_broker, rabbitmq, amqp_url):
    import requests

    vhost = pika.URLParameters(amqp_url).virtual_host
    r = requests.get(f"{rabbitmq.management_url.rstrip('/')}/api/policies/"
                     f"{requests.utils.quote(vhost, safe='')}/fnrelay-deadletter",
                     auth=rabbitmq.admin_auth, timeout=10)
    assert r.status_code == 200
    assert r.json()["definition"]["dead-letter-exchange"] == wire.DEADLETTER_EXCHANGE


def test_the_direct_path_is_granted_to_the_owner_unless_turned_off(alice, bob, start_broker,
                                                                   new_vhost, rabbitmq):
    """POST /task_groups with an endpoint: its owner's group may publish to it directly;
    another user's, a multi-user manager's, or any under `serve --no-direct` may not."""
    eid, _ = _register(alice)
    manager, _ = _register(alice, {"multi_user": True})
    granted = alice.ok("POST", "/task_groups", json={"endpoint_id": eid})
    assert granted["submit"] == {"exchange": wire.SUBMIT_EXCHANGE, "routing_key": eid,
                                 "payload_limit": PAYLOAD_LIMIT}
    assert granted["result_senders"][1] == f"fnrelay-ep-{eid}"
    assert bob.ok("POST", "/task_groups", json={"endpoint_id": eid})["submit"] is None
    assert alice.ok("POST", "/task_groups", json={"endpoint_id": manager})["submit"] is None
    off = start_broker(new_vhost("fnrelay-no-direct-test"), None, "--amqp-management-url",
                       rabbitmq.management_url, "--no-direct").api()
    eid2, _ = _register(off)
    assert off.ok("POST", "/task_groups", json={"endpoint_id": eid2})["submit"] is None


def test_the_direct_path_grant_carries_the_broker_payload_limit(alice):
    """The Executor holds direct-path tasks to the limit REST enforces: the grant says which."""
    eid, _ = _register(alice)
    granted = alice.ok("POST", "/task_groups", json={"endpoint_id": eid})
    assert granted["submit"]["payload_limit"] == PAYLOAD_LIMIT
    r = alice("POST", "/functions", json={"function": "01\n" + "x" * PAYLOAD_LIMIT})
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
