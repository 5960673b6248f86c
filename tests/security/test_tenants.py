"""Another tenant with an ordinary account attacks through the public interfaces: REST with
their own token, AMQP with the credentials the broker hands them, the SDK.

One broker with per-party RabbitMQ accounts (`--amqp-management-url`), as deployed. Alice and
Bob are victims; Mallory is the attacker. Results are pickles: a result a victim's Executor
accepts from the wrong party is code run in the victim's process, so every test here that
delivers a forged result checks that it is never unpickled.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import threading
import uuid

import pika
import pika.exceptions
import pytest
import requests

from fnrelay import Client, Executor, serialize, wire
from support.direct_path import direct_ready
from support.postgres_fixtures import postgres  # noqa: F401
from support.waiting import wait_for


@pytest.fixture(scope="module")
def amqp_url(new_vhost) -> str:  # type: ignore[no-untyped-def]
    return new_vhost("fnrelay-tenants-test")


@pytest.fixture(scope="module")
def tenant_broker(start_broker, amqp_url, rabbitmq):  # type: ignore[no-untyped-def]
    return start_broker(amqp_url, None, "--amqp-management-url", rabbitmq.management_url)


@pytest.fixture
def alice(tenant_broker):  # type: ignore[no-untyped-def]
    return tenant_broker.api()


@pytest.fixture
def bob(tenant_broker):  # type: ignore[no-untyped-def]
    return tenant_broker.api()


@pytest.fixture
def mallory(tenant_broker):  # type: ignore[no-untyped-def]
    return tenant_broker.api()


def _user_id(api) -> str:  # type: ignore[no-untyped-def]
    return str(api.ok("GET", "/whoami")["user_id"])


def _old_child_id(manager_id: str, user_id: str, config: dict) -> str:
    """How child ids used to be derived (anyone who knew the user id could compute them)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(uuid.UUID(manager_id), f"{user_id}:{text}"))


def _put(api, eid: str, metadata: dict | None = None):  # type: ignore[no-untyped-def]
    return api("PUT", f"/endpoints/{eid}", json={"name": "mine", "metadata": metadata or {}})


def _channel(url: str):  # type: ignore[no-untyped-def]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    return conn, conn.channel()


# --- 1. squatting a multi-user child id ---------------------------------------------------------
def test_no_user_can_claim_the_child_endpoint_that_another_users_tasks_go_to(
        alice, bob, mallory):
    manager = alice.endpoint({"multi_user": True})
    bob_id = _user_id(bob)  # shown to the owner of any multi-user endpoint Bob used
    for config in ({}, {"label": "x"}):
        assert _put(mallory, _old_child_id(manager, bob_id, config)).status_code == 404
    assert _put(mallory, str(uuid.uuid4())).status_code == 404  # PUT creates nothing
    bob.submit(manager, bob.function())
    children = [e for e in bob.ok("GET", "/endpoints")["endpoints"]
                if e["name"].startswith("ep/")]
    assert len(children) == 1
    child = children[0]["endpoint_id"]
    assert child != _old_child_id(manager, bob_id, {})
    assert all(e["endpoint_id"] != child for e in mallory.ok("GET", "/endpoints")["endpoints"])
    # Only the manager's owner gets the child's credentials, and no one can re-describe it.
    assert mallory("POST", f"/endpoints/{manager}/children/{child}/credentials"
                   ).status_code == 404
    assert _put(bob, child).status_code == 404
    assert _put(mallory, child).status_code == 404


# --- 2. a deleted endpoint id ---------------------------------------------------------------------
def test_a_deleted_endpoint_stays_retired_and_its_direct_path_grants_go(alice, mallory):
    eid = alice.endpoint()
    group = alice.ok("POST", "/task_groups", json={"endpoint_id": eid})
    assert group["submit"] is not None  # the direct path is granted
    alice.ok("DELETE", f"/endpoints/{eid}")
    # Nobody registers the id again, Mallory least of all.
    assert _put(mallory, eid).status_code == 404
    assert _put(alice, eid).status_code == 404
    # The grant's account is gone with it: its credentials no longer connect.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(group["amqp_url"]))
    again = alice.ok("POST", "/task_groups", json={"task_group_id": group["task_group_id"],
                                                   "endpoint_id": eid})
    assert again["submit"] is None
    # Alice is told it was deleted; to Mallory it is as unknown as any id.
    fid = alice.function()
    r = alice("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())}, json={
        "endpoint_id": eid, "tasks": [{"function_id": fid, "payload": "03\n[]"}]})
    assert r.status_code == 404 and "was deleted" in r.json()["message"]
    r = mallory("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())}, json={
        "endpoint_id": eid, "tasks": [{"function_id": mallory.function(),
                                       "payload": "03\n[]"}]})
    unknown = mallory("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())}, json={
        "endpoint_id": str(uuid.uuid4()), "tasks": [{"function_id": mallory.function(),
                                                     "payload": "03\n[]"}]})
    assert r.status_code == unknown.status_code == 404
    assert "deleted" not in r.json()["message"]


def test_an_executor_whose_endpoint_is_deleted_fails_its_futures_saying_so(
        tenant_broker, alice):
    reg = alice.register()
    eid = reg["endpoint_id"]
    client = Client(tenant_broker.url, alice.http.headers["Authorization"].split()[1])
    with Executor(eid, client=client) as ex:
        before = ex.submit(pow, 2, 3)
        wait_for(lambda: before.task_id and _recorded(alice, before.task_id),
                 "the task to be recorded")
        alice.ok("DELETE", f"/endpoints/{eid}")
        with pytest.raises(Exception, match="deleted"):
            before.result(timeout=60)
        after = ex.submit(pow, 2, 4)
        with pytest.raises(Exception, match="deleted"):
            after.result(timeout=60)


def _recorded(api, task_id: str) -> bool:  # type: ignore[no-untyped-def]
    return api("GET", f"/tasks/{task_id}").status_code == 200


# --- 4. an endpoint token is not an owner token -----------------------------------------------
def test_an_endpoint_token_cannot_change_its_endpoints_policy(tenant_broker, alice, bob):
    eid = alice.endpoint()
    fid_bob = bob.function("01\nshared-code")
    alice.ok("PUT", f"/endpoints/{eid}", json={"name": "ep", "metadata": {
        "allowed_functions": [protocol_digest("01\nshared-code")]}})
    username = alice.ok("GET", "/whoami")["username"]
    out = tenant_broker.cli("token", "create", username, "--endpoint", eid)
    assert out.returncode == 0, out.stderr
    ep_token = tenant_broker.api(out.stdout.strip().splitlines()[-1])
    for policy in ({"allowed_functions": ["0" * 64]}, {"allowed_functions": None},
                   {"multi_user": True}):
        r = _put(ep_token, eid, policy)
        assert r.status_code == 403, r.text
        assert "owner" in r.json()["message"]
    # What an endpoint does, it may: register its process (policy kept), and get its account.
    reg = ep_token.ok("PUT", f"/endpoints/{eid}", json={"name": "site", "metadata": {
        "hostname": "node1"}})
    assert reg["amqp_url"].startswith("amqp")
    bob.submit(eid, fid_bob)  # still shared with Bob for that function
    # It cannot create endpoints, nor a token for an endpoint that is not the user's.
    assert ep_token("POST", "/endpoints", json={"name": "x", "metadata": {}}).status_code == 403
    out = tenant_broker.cli("token", "create", username, "--endpoint", str(uuid.uuid4()))
    assert out.returncode != 0 and "has no endpoint" in out.stderr + out.stdout


def protocol_digest(body: str) -> str:
    import hashlib

    return hashlib.sha256(body.encode()).hexdigest()


# --- 5. oracles and floods ------------------------------------------------------------------------
def test_another_users_endpoint_answers_like_an_unknown_one(alice, mallory):
    eid = alice.endpoint()
    for method, path in (("PUT", f"/endpoints/{eid}"), ("GET", f"/endpoints/{eid}/status"),
                         ("DELETE", f"/endpoints/{eid}")):
        mine = mallory(method, path, json={"name": "x", "metadata": {}})
        unknown = mallory(method, path.replace(eid, str(uuid.uuid4())),
                          json={"name": "x", "metadata": {}})
        assert (mine.status_code, mine.json()["code"]) == (
            unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND"), method


def test_queue_names_cannot_be_guessed_from_ids_another_party_knows(alice, mallory):
    """RabbitMQ answers passive declares without a permission check: a queue named after an
    id would tell Mallory whether Alice's endpoint is online or her group in use."""
    reg = alice.register()
    eid = reg["endpoint_id"]
    group = alice.ok("POST", "/task_groups", json={"endpoint_id": eid})
    assert eid not in reg["task_queue"] and group["task_group_id"] not in group["queue"]
    conn, _ = _channel(reg["amqp_url"])  # Alice's endpoint is online, consuming its queue
    ch = conn.channel()
    ch.basic_consume(reg["task_queue"], lambda *a: None)
    attacker, _ = _channel(mallory.register()["amqp_url"])
    try:
        for guess in (f"fnrelay.endpoint.{eid}.tasks", f"fnrelay.group.{group['task_group_id']}",
                      f"fnrelay.endpoint.{eid}.control"):
            probe = attacker.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                probe.queue_declare(guess, passive=True)
            assert e.value.reply_code == 404, guess
    finally:
        attacker.close()
        conn.close()


def test_no_other_endpoint_can_publish_into_a_task_group(alice, mallory):
    eid = alice.endpoint()
    group = alice.ok("POST", "/task_groups", json={"endpoint_id": eid})
    gid = group["task_group_id"]
    forged = wire.encode_results([wire.ResultMessage(
        task_id=str(uuid.uuid4()), status="success", result=serialize.serialize("forged"),
        task_group_id=gid)])
    mreg = mallory.register()
    mid = mreg["endpoint_id"]
    conn, _ = _channel(mreg["amqp_url"])
    user = pika.URLParameters(mreg["amqp_url"]).credentials.username
    try:
        for key in (gid, wire.group_routing_key(gid, mid), wire.group_routing_key(
                gid, eid)):
            ch = conn.channel()
            ch.confirm_delivery()  # a refusal then shows at this publish
            try:
                ch.basic_publish(wire.GROUPS_EXCHANGE, key, forged, pika.BasicProperties(
                    type=wire.MSG_RESULTS, user_id=user))
            except pika.exceptions.ChannelClosedByBroker as e:
                assert e.reply_code == 403, key
            else:  # allowed (its own id) but bound to no group of Alice's
                assert key == wire.group_routing_key(gid, mid)
                ch.close()
    finally:
        conn.close()
    reader, rch = _channel(group["amqp_url"])
    try:
        assert rch.basic_get(group["queue"], auto_ack=True)[0] is None
    finally:
        reader.close()


def test_a_flood_of_bad_messages_costs_one_log_line(tenant_broker, alice, caplog):
    reg = alice.register()
    eid = reg["endpoint_id"]
    client = Client(tenant_broker.url, alice.http.headers["Authorization"].split()[1])
    with direct_ready(Executor(eid, client=client)) as ex:
        fut = ex.submit(pow, 2, 5)  # the direct path: the endpoint's result is believed
        wait_for(lambda: fut.task_id, "the task to be sent")
        assert ex._group is not None
        gid, key = ex._group["task_group_id"], wire.group_routing_key(
            ex._group["task_group_id"], eid)
        conn, ch = _channel(reg["amqp_url"])  # the granted endpoint, gone bad
        user = pika.URLParameters(reg["amqp_url"]).credentials.username
        with caplog.at_level(logging.WARNING, logger="fnrelay"):
            for _ in range(200):
                ch.basic_publish(wire.GROUPS_EXCHANGE, key, b"\x00not json",
                                 pika.BasicProperties(type=wire.MSG_RESULTS, user_id=user))
            genuine = wire.encode_results([wire.ResultMessage(
                task_id=fut.task_id, status="success", result=serialize.serialize(32),
                task_group_id=gid)])
            ch.basic_publish(wire.GROUPS_EXCHANGE, key, genuine, pika.BasicProperties(
                type=wire.MSG_RESULTS, user_id=user))
            assert fut.result(timeout=60) == 32  # after all 200 were read
        conn.close()
    drops = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]


# --- defence in depth: the SDK's own check ------------------------------------------------
def test_the_endpoints_own_result_settles_only_a_task_sent_to_it_directly(tenant_broker, alice):
    """The broker vouches for every result it forwards; a result the endpoint's account puts
    in the group queue is believed only for a task the Executor published to it directly."""
    reg = alice.register()
    eid = reg["endpoint_id"]
    client = Client(tenant_broker.url, alice.http.headers["Authorization"].split()[1])
    ex = direct_ready(Executor(eid, client=client))
    try:
        direct = ex.submit(pow, 1, 1)  # the direct path: the group is granted
        wait_for(lambda: ex._group is not None and direct.task_id, "the task group")
        ex.direct = False  # from now on over REST: the broker records first
        fut = ex.submit(pow, 2, 6)
        wait_for(lambda: fut.task_id, "the REST submission")
        assert ex._group is not None
        gid = ex._group["task_group_id"]
        forged = wire.encode_results([wire.ResultMessage(
            task_id=fut.task_id, status="success", task_group_id=gid,
            result=serialize.serialize(_Tripwire()))])
        conn, ch = _channel(reg["amqp_url"])
        user = pika.URLParameters(reg["amqp_url"]).credentials.username
        try:
            ch.basic_publish(wire.GROUPS_EXCHANGE, wire.group_routing_key(gid, eid),
                             forged, pika.BasicProperties(type=wire.MSG_RESULTS,
                                                          user_id=user))
            # The genuine result, through the broker (which records it first).
            ch.basic_publish(wire.RESULTS_EXCHANGE, eid, wire.encode_results([
                wire.ResultMessage(task_id=fut.task_id, status="success",
                                       result=serialize.serialize(64), task_group_id=gid)]),
                pika.BasicProperties(type=wire.MSG_RESULTS, user_id=user,
                                     content_type=wire.CONTENT_TYPE))
            assert fut.result(timeout=60) == 64
            # The same account's result for the task sent to it directly is believed.
            ch.basic_publish(wire.GROUPS_EXCHANGE, wire.group_routing_key(gid, eid),
                             wire.encode_results([wire.ResultMessage(
                                 task_id=direct.task_id, status="success", task_group_id=gid,
                                 result=serialize.serialize(1))]),
                             pika.BasicProperties(type=wire.MSG_RESULTS, user_id=user))
            assert direct.result(timeout=60) == 1
        finally:
            conn.close()
    finally:  # nothing is left to wait for: the result watcher ends with the test
        ex.shutdown(wait=False, cancel_futures=True)
    assert not _TRIPPED.is_set()


class _Tripwire:
    """Sets _TRIPPED when unpickled (a forged result's code running in the victim)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_trip, ())


def _trip() -> None:
    _TRIPPED.set()


_TRIPPED = threading.Event()


# --- the same ids on PostgreSQL (its JSON path queries differ from SQLite's) --------------------
def test_child_and_deleted_ids_hold_on_postgresql(start_broker, new_vhost, rabbitmq,
                                                  postgres):  # noqa: F811
    # A virtual host of its own: two brokers on one would take each other's results.
    pg = start_broker(new_vhost("fnrelay-tenants-pg-test"), postgres.create_database(),
                      "--amqp-management-url", rabbitmq.management_url)
    test_no_user_can_claim_the_child_endpoint_that_another_users_tasks_go_to(
        pg.api(), pg.api(), pg.api())
    test_a_deleted_endpoint_stays_retired_and_its_direct_path_grants_go(pg.api(), pg.api())


# --- fields and ids only the broker sets ---------------------------------------------------------
def test_no_client_makes_an_endpoint_a_child_of_a_multi_user_endpoint(tenant_broker, alice,
                                                                       mallory):
    """Were `parent` a client's to set, a stolen endpoint token could make its endpoint the
    child of the thief's manager, who would then get its credentials and its tasks."""
    eid = alice.endpoint()
    manager = mallory.endpoint({"multi_user": True})
    username = alice.ok("GET", "/whoami")["username"]
    out = tenant_broker.cli("token", "create", username, "--endpoint", eid)
    stolen = tenant_broker.api(out.stdout.strip().splitlines()[-1])
    for api in (stolen, alice):
        for key in ("parent", "user_endpoint_config"):
            r = _put(api, eid, {key: manager if key == "parent" else {}})
            assert r.status_code == 422 and key in r.json()["message"], r.text
    r = mallory("POST", "/endpoints", json={"name": "x", "metadata": {"parent": manager}})
    assert r.status_code == 422
    assert mallory("POST", f"/endpoints/{manager}/children/{eid}/credentials"
                   ).status_code == 404
    assert _put(alice, eid).status_code == 200  # still Alice's own


def test_task_group_ids_are_the_brokers_to_choose(alice, mallory):
    gid = alice.ok("POST", "/task_groups", json={})["task_group_id"]
    theirs = mallory("POST", "/task_groups", json={"task_group_id": gid})
    unknown = mallory("POST", "/task_groups", json={"task_group_id": str(uuid.uuid4())})
    assert (theirs.status_code, theirs.json()["code"]) == (
        unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
    # Nor does a submission claim a group id someone has seen (an endpoint sees its tasks').
    claimed = str(uuid.uuid4())
    r = mallory("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())}, json={
        "endpoint_id": mallory.endpoint(), "task_group_id": claimed,
        "tasks": [{"function_id": mallory.function(), "payload": "03\n[]"}]})
    assert r.status_code == 404
    assert alice.ok("POST", "/task_groups", json={"task_group_id": gid})["task_group_id"] == gid


def test_an_endpoint_cannot_plant_tasks_in_its_owners_other_groups(alice):
    """An endpoint's result for a task the broker does not know may record that task from the
    result's `record` (the direct path's fallback), but only in a group that granted that
    endpoint the direct path: else a stolen endpoint account plants pickles that the owner's
    Executor on another endpoint reads as the broker's."""
    import hashlib

    from fnrelay_broker.registry import function_id_of

    e1 = alice.register()
    e2 = alice.endpoint()
    answer = alice.submit(e2, alice.function())  # a REST group of Alice's other endpoint
    gid = answer["task_group_id"]
    digest = hashlib.sha256(b"01\nplanted").hexdigest()
    planted = str(uuid.uuid4())
    forged = wire.encode_results([wire.ResultMessage(
        task_id=planted, status="success", result=serialize.serialize("planted"),
        task_group_id=gid, record={"function_id": function_id_of(_user_id(alice), digest),
                                   "function_sha256": digest})])
    conn, ch = _channel(e1["amqp_url"])
    user = pika.URLParameters(e1["amqp_url"]).credentials.username
    try:
        ch.basic_publish(wire.RESULTS_EXCHANGE, e1["endpoint_id"], forged,
                         pika.BasicProperties(type=wire.MSG_RESULTS, user_id=user,
                                              content_type=wire.CONTENT_TYPE))
        # A genuine result of E1's own REST task after it: once that is recorded, so would
        # the planted one be (the unknown one's retry comes UNKNOWN_RETRY after it).
        own = alice.submit(e1["endpoint_id"], alice.function())["task_ids"][0]
        ch.basic_publish(wire.RESULTS_EXCHANGE, e1["endpoint_id"], wire.encode_results(
            [wire.ResultMessage(task_id=own, status="success",
                                    result=serialize.serialize(1))]),
            pika.BasicProperties(type=wire.MSG_RESULTS, user_id=user,
                                 content_type=wire.CONTENT_TYPE))
    finally:
        conn.close()
    wait_for(lambda: alice.ok("GET", f"/tasks/{own}")["status"] == "success", "E1's result")
    threading.Event().wait(1.5)  # past UNKNOWN_RETRY (0.5 s) and its retries
    assert planted not in alice.ok("GET", f"/task_groups/{gid}")["task_ids"]
    assert alice("GET", f"/tasks/{planted}").status_code == 404


def test_the_dead_letter_queue_is_bounded(tenant_broker, rabbitmq, amqp_url):
    """Any endpoint may dead-letter: a flood must not fill RabbitMQ's disk for every tenant."""
    import requests

    vhost = requests.utils.quote(pika.URLParameters(amqp_url).virtual_host, safe="")
    r = requests.get(f"{rabbitmq.management_url.rstrip('/')}/api/policies/{vhost}/"
                     "fnrelay-deadletter-limit", auth=rabbitmq.admin_auth, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["definition"]["overflow"] == "drop-head"
    assert r.json()["definition"]["max-length"] > 0


# --- 5. a guest on a shared endpoint sends data, never code -----------------------------------
def test_a_guest_on_a_shared_endpoint_may_send_only_json_arguments(alice, mallory):
    """The allowlist vets functions; the endpoint unpickles arguments as its owner, so a
    pickled argument (one whose __reduce__ runs a command) would be the guest's code run as
    Alice. Only JSON arguments and no user_endpoint_config pass."""
    eid = alice.endpoint()
    fid = mallory.function("01\nallowed-code")
    alice.ok("PUT", f"/endpoints/{eid}", json={"name": "ep", "metadata": {
        "allowed_functions": [protocol_digest("01\nallowed-code")]}})

    def submit(**task: object) -> requests.Response:
        return mallory("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())},
                       json={"endpoint_id": eid, "tasks": [{"function_id": fid, **task}]})

    pickled = "02\n" + base64.b64encode(pickle.dumps(([], {}))).decode()
    for task in ({"payload": pickled},
                 {"payload": "03\n[[1], {}]", "user_endpoint_config": {"worker_init": "id"}}):
        r = submit(**task)
        assert r.status_code == 403, r.text
        assert "shared by allowed_functions" in r.json()["message"]
    assert mallory.ok("GET", "/tasks")["tasks"] == []  # nothing of them was stored
    assert submit(payload="03\n[[1], {}]").status_code == 200
    # The owner's own tasks are not limited.
    own = alice.function("01\nalice-code")
    r = alice("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())}, json={
        "endpoint_id": eid, "tasks": [{"function_id": own, "payload": pickled,
                                       "user_endpoint_config": {"worker_init": "id"}}]})
    assert r.status_code == 200, r.text


def _packed(*buffers: str) -> str:
    """Globus Compute's packed buffer ("<length>\\n<data>" each)."""
    return "".join(f"{len(b):02d}\n{b}" for b in buffers)


def test_a_guest_may_not_submit_in_globus_computes_format_to_a_shared_endpoint(alice, mallory):
    """Guests reach a shared endpoint through the Globus Compute API too (/v3 submit): its
    tasks' arguments are pickles whatever they look like. This one's packed arguments even
    begin as fnrelay's JSON tag does ("03\\n"), so the format itself must be refused."""
    eid = alice.endpoint()
    root = mallory.base.removesuffix("/v1")
    code = _packed("allowed-gc-code")
    fid = mallory.http.post(f"{root}/v2/functions", timeout=30, json={
        "function_name": "f", "function_code": code}).json()["function_uuid"]
    alice.ok("PUT", f"/endpoints/{eid}", json={"name": "ep", "metadata": {
        "allowed_functions": [protocol_digest(code)]}})
    args = _packed("[1]", "{}")
    assert args.startswith("03\n")
    for extra in ({}, {"user_endpoint_config": {"worker_init": "id"}}):
        r = mallory.http.post(f"{root}/v3/endpoints/{eid}/submit", timeout=30,
                              json={"tasks": {fid: [args]}, **extra})
        assert r.status_code == 403, r.text
        assert "shared by allowed_functions" in r.json()["message"]
        assert "Globus Compute" in r.json()["message"]
    assert mallory.ok("GET", "/tasks")["tasks"] == []  # nothing of them was stored
