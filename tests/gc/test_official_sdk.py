"""The official, unmodified globus-compute-sdk against a real fnrelay broker on port 5000:
token exchange, register, submit, results, batch status, the Executor over AMQP, tenant
isolation and errors (issue 18)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fnrelay.devstack.services import BrokerServer
from support.session import MARKER

# tests/gc is no package ("gc" is a standard module) and pytest imports by path: its helper
# module is found beside this file.
sys.path.insert(0, str(Path(__file__).parent))
from support_official import (  # noqa: E402
    PORT,
    GlobusComputeEndpoint,
    Party,
    add_party,
    gc_venv,  # noqa: F401 - the fixture pytestmark names
    needs_gc_venv,
    port_5000,  # noqa: F401 - the fixture
    run_sdk,
)

pytestmark = [needs_gc_venv, pytest.mark.timeout(600)]


@dataclass
class Stack:
    broker: BrokerServer
    alice: Party
    mallory: Party
    endpoint_id: str


@pytest.fixture(scope="module")
def stack(port_5000: int, rabbitmq, new_vhost,  # noqa: F811 - the fixture
          _workdir: Path) -> Iterator[Stack]:
    d = _workdir / f"gc-official-{uuid.uuid4().hex[:6]}"
    broker = BrokerServer(d / "broker", new_vhost("gc-official"), port=PORT, marker=MARKER,
                          management_url=rabbitmq.management_url,
                          extra_args=["--heartbeat-period", "1", "--heartbeat-threshold", "4"])
    broker.start()
    ep = None
    try:
        assert broker.port == PORT
        parties = [add_party(broker, name, d) for name in ("alice", "mallory")]
        ep = GlobusComputeEndpoint(d / "endpoint", "gc", broker.url, parties[0].token,
                                   marker=MARKER).configure(max_workers=2)
        ep.start()
        yield Stack(broker, parties[0], parties[1], ep.endpoint_id)
    finally:
        if ep is not None:
            ep.stop()
        broker.stop()


def test_client_token_exchange_register_submit_and_results(stack: Stack):
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        from globus_compute_sdk.errors import TaskExecutionFailed
        def add(a, b):
            return a + b
        def boom():
            return 1 / 0
        c = Client()
        fid = c.register_function(add)
        tid = c.run(2, 3, endpoint_id="{stack.endpoint_id}", function_id=fid)
        value = result_of(c, tid)
        batch = c.create_batch()
        for i in range(3):
            batch.add(fid, (i, i))
        r = c.batch_run("{stack.endpoint_id}", batch)
        ids = r["tasks"][fid]
        import time
        deadline = time.time() + 60
        while True:
            res = c.get_batch_result(ids)
            if all(not v["pending"] for v in res.values()) and len(res) == 3:
                break
            assert time.time() < deadline, res
            time.sleep(0.3)
        bid = c.register_function(boom)
        etid = c.run(endpoint_id="{stack.endpoint_id}", function_id=bid)
        try:
            err = f"no failure: {{result_of(c, etid)!r}}"
        except TaskExecutionFailed as e:
            err = str(e)
        print(json.dumps({{"value": value, "batch": sorted(v["result"] for v in res.values()),
                          "group": r["task_group_id"], "err": err,
                          "status": c.get_endpoint_status("{stack.endpoint_id}")["status"]}}))
    """, stack.alice.env())
    assert got["value"] == 5
    assert got["batch"] == [0, 2, 4]
    assert "ZeroDivisionError" in got["err"]
    assert got["status"] == "online"


def test_executor_end_to_end_over_amqp_and_reattach(stack: Stack):
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Executor
        def square(x):
            return x * x
        with Executor(endpoint_id="{stack.endpoint_id}") as ex:
            futs = [ex.submit(square, i) for i in range(5)]
            values = [f.result(timeout=120) for f in futs]
            group = str(ex.task_group_id)
        with Executor(endpoint_id="{stack.endpoint_id}") as ex2:
            again = sorted(f.result(timeout=60) for f in ex2.reload_tasks(group))
        print(json.dumps({{"values": values, "again": again, "group": group}}))
    """, stack.alice.env())
    assert got["values"] == [0, 1, 4, 9, 16]
    assert got["again"] == [0, 1, 4, 9, 16]


def test_another_user_cannot_read_tasks_groups_or_result_queues(stack: Stack):
    got = run_sdk(f"""
        import json, time
        from globus_compute_sdk import Client
        def ident(x):
            return x
        c = Client()
        fid = c.register_function(ident)
        r = c.batch_run("{stack.endpoint_id}", (lambda b: (b.add(fid, (7,)), b)[1])(
            c.create_batch()))
        print(json.dumps({{"task": r["tasks"][fid][0], "group": r["task_group_id"],
                          "fid": fid}}))
    """, stack.alice.env())
    m = stack.mallory
    assert m.get(f"/v2/tasks/{got['task']}").status_code == 404
    assert m.get(f"/v2/taskgroup/{got['group']}").status_code == 404
    assert m.get(f"/v2/functions/{got['fid']}").status_code == 404
    assert m.get(f"/v2/endpoints/{stack.endpoint_id}/status").status_code == 404
    r = requests.post(f"http://127.0.0.1:{PORT}/v2/batch_status", timeout=10,
                      json={"task_ids": [got["task"]]},
                      headers={"Authorization": f"Bearer {m.token}"})
    assert r.status_code == 200 and r.json()["results"] == {}
    # Mallory's own AMQP account cannot consume Alice's group queue, even knowing its name
    # (she does not: the prefix is Alice's secret; she tries hers and Alice's group id).
    theirs = stack.alice.get("/v2/get_amqp_result_connection_url").json()
    mine = m.get("/v2/get_amqp_result_connection_url").json()
    assert theirs["queue_prefix"] != mine["queue_prefix"]
    import pika
    from pika.exceptions import ChannelClosedByBroker

    for prefix in (mine["queue_prefix"], theirs["queue_prefix"]):
        conn = pika.BlockingConnection(pika.URLParameters(mine["connection_url"]))
        try:
            ch = conn.channel()
            with pytest.raises(ChannelClosedByBroker) as e:
                ch.basic_consume(prefix + got["group"], lambda *a: None)
            assert e.value.reply_code in (403, 404)
        finally:
            if conn.is_open:
                conn.close()
    # and Mallory cannot submit to Alice's endpoint with Alice's function
    run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        from globus_sdk import GlobusAPIError
        c = Client()
        b = c.create_batch()
        b.add("{got['fid']}", (1,))
        try:
            c.batch_run("{stack.endpoint_id}", b)
        except GlobusAPIError as e:
            assert e.http_status == 404, e
            print(json.dumps({{"status": e.http_status}}))
    """, m.env())


def test_bad_input_is_a_globus_api_error_not_a_500(stack: Stack):
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        from globus_sdk import GlobusAPIError
        c = Client()
        web = c._compute_web_client
        out = {{}}
        calls = {{
            "submit_garbage": lambda: web.v3.submit("{stack.endpoint_id}", {{"tasks": 3}}),
            "submit_bad_payload": lambda: web.v3.submit("{stack.endpoint_id}", {{"tasks": {{
                "{uuid.uuid4()}": ["not a packed buffer"]}}}}),
            "unknown_function": lambda: web.v3.submit("{stack.endpoint_id}", {{"tasks": {{
                "{uuid.uuid4()}": ["1\\na1\\nb"]}}}}),
            "bad_task_id": lambda: web.v2.get_task("nope"),
            "bad_function": lambda: web.v3.register_function({{"function_name": 1}}),
            "unknown_endpoint": lambda: web.v2.get_endpoint_status("{uuid.uuid4()}"),
            "batch_status": lambda: web.v2.post("/v2/batch_status", data={{"task_ids": 5}}),
            "submit_v2": lambda: web.v2.submit({{"tasks": []}}),
        }}
        for name, call in calls.items():
            try:
                call()
                out[name] = "no error"
            except GlobusAPIError as e:
                out[name] = [e.http_status, e.code, e.message]
        print(json.dumps(out))
    """, stack.alice.env())
    for name, answer in got.items():
        assert isinstance(answer, list), (name, answer)
        assert 400 <= answer[0] < 500, (name, answer)
        assert answer[2], (name, answer)


def test_token_route_refuses_a_wrong_pair(stack: Stack):
    r = requests.post(f"http://127.0.0.1:{PORT}/v2/oauth2/token", timeout=10,
                      data={"grant_type": "client_credentials", "scope": "x"},
                      auth=(stack.mallory.user_id, stack.alice.token))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def _new_endpoint(party: Party, name: str, metadata: dict | None = None) -> str:
    """An endpoint of `party`'s, registered and never started (enough to manage it)."""
    r = requests.post(f"http://127.0.0.1:{PORT}/v1/endpoints", timeout=10,
                      json={"name": name, "metadata": metadata or {}},
                      headers={"Authorization": f"Bearer {party.token}"})
    assert r.status_code == 200, r.text
    return r.json()["endpoint_id"]


def test_source_code_allowlist_delete_stop_and_runtime_as_the_official_client_calls_them(
        stack: Stack):
    """The Client methods that looked after registered things all got 404 (no route) or a
    wrong answer (an empty allowlist): register_source_code runs, get_allowed_functions is the
    endpoint's list, delete_function, stop_endpoint and delete_endpoint answer as Globus
    Compute does, and public/group are refused saying so."""
    digest = "ab" * 32
    shared = _new_endpoint(stack.alice, "gc-shared", {"allowed_functions": [digest]})
    spare = _new_endpoint(stack.alice, "gc-spare")
    got = run_sdk(f"""
        import json, uuid
        from globus_compute_sdk import Client
        from globus_sdk import GlobusAPIError
        def ident(x):
            return x
        def error_of(call):
            try:
                call()
            except GlobusAPIError as e:
                return [e.http_status, e.message]
            return "no error"
        c = Client()
        sfid = c.register_source_code("def hello(name):\\n    return 'hi ' + name\\n", "hello")
        tid = c.run("x", endpoint_id="{stack.endpoint_id}", function_id=sfid)
        hello = result_of(c, tid)
        fid = c.register_function(ident)
        out = {{
            "hello": hello,
            "record": c._compute_web_client.v2.get_task(tid).data,
            "public": error_of(lambda: c.register_function(ident, public=True)),
            "group": error_of(lambda: c.register_function(ident, group=str(uuid.uuid4()))),
            "allowed": c.get_allowed_functions("{shared}"),
            "metadata_allowed": c.get_endpoint_metadata("{shared}")["allowed_functions"],
            "delete_function": c.delete_function(fid).data,
            "deleted_function": error_of(lambda: c.get_function(fid)),
            "stop": c.stop_endpoint("{spare}").data,
            "delete_endpoint": c.delete_endpoint("{shared}").data,
            "deleted_endpoint": error_of(lambda: c.get_endpoint_status("{shared}")),
        }}
        print(json.dumps(out))
    """, stack.alice.env())
    assert got["hello"] == "hi x"
    # The submitter's runtime, which the Client sends with every submit, is kept on the task.
    runtime = got["record"]["details"]["user_runtime"]
    assert runtime["python_version"] == sys.version and runtime["globus_compute_sdk_version"]
    assert got["public"][0] == 400 and "'public' is not supported" in got["public"][1]
    assert got["group"][0] == 400 and "'group' is not supported" in got["group"][1]
    assert got["allowed"] == {"endpoint_id": shared, "restricted": True, "functions": [digest]}
    assert got["metadata_allowed"] == [digest]
    assert got["delete_function"] == {"result": 302}
    assert got["deleted_function"][0] == 404
    assert got["stop"]["endpoint_id"] == spare
    assert got["stop"]["lock_expiration_timestamp"][:2] == "20"
    assert got["delete_endpoint"] == {"result": 302}
    assert got["deleted_endpoint"][0] == 404


def test_another_user_cannot_delete_or_stop_what_is_not_theirs(stack: Stack):
    """Mallory, an ordinary account, names Alice's function and endpoint: 404 each time,
    exactly as for ids that do not exist, and both go on working for Alice."""
    alice = run_sdk("""
        import json
        from globus_compute_sdk import Client
        def ident(x):
            return x
        print(json.dumps({"fid": Client().register_function(ident)}))
    """, stack.alice.env())
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        from globus_sdk import GlobusAPIError
        c = Client()
        out = {{}}
        calls = {{
            "delete_function": lambda: c.delete_function("{alice['fid']}"),
            "stop_endpoint": lambda: c.stop_endpoint("{stack.endpoint_id}"),
            "delete_endpoint": lambda: c.delete_endpoint("{stack.endpoint_id}"),
            "allowed": lambda: c.get_allowed_functions("{stack.endpoint_id}"),
            "lock_v2": lambda: c._compute_web_client.v2.lock_endpoint("{stack.endpoint_id}"),
        }}
        for name, call in calls.items():
            try:
                call()
                out[name] = "no error"
            except GlobusAPIError as e:
                out[name] = e.http_status
        print(json.dumps(out))
    """, stack.mallory.env())
    assert got == dict.fromkeys(("delete_function", "stop_endpoint", "delete_endpoint",
                                 "allowed", "lock_v2"), 404)
    assert stack.alice.get(f"/v2/functions/{alice['fid']}").status_code == 200
    status = stack.alice.get(f"/v2/endpoints/{stack.endpoint_id}/status").json()
    assert status["status"] == "online"
