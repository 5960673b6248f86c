"""The broker's REST API over raw HTTP: auth, registration, submit validation, limits."""

from __future__ import annotations

import uuid

import requests


def test_user_add_prints_a_token_that_whoami_accepts(broker):
    name = f"ada-{uuid.uuid4().hex[:6]}"
    token = broker.add_user(name)
    me = broker.api(token).ok("GET", "/whoami")
    assert me["username"] == name and uuid.UUID(me["user_id"])


def test_duplicate_username_is_a_clear_error(broker):
    name = f"bob-{uuid.uuid4().hex[:6]}"
    broker.add_user(name)
    out = broker.cli("user", "add", name)
    assert out.returncode != 0
    assert "already exists" in out.stderr and "Traceback" not in out.stderr


def test_bad_or_missing_token_is_401(broker):
    r = broker.api("not-a-token")("GET", "/whoami")
    assert r.status_code == 401
    assert r.json() == {"code": "UNAUTHORIZED", "message": r.json()["message"],
                        "http_status": 401}
    r = requests.get(f"{broker.url}/v1/whoami", timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"


def test_revoked_token_is_401(broker):
    token = broker.add_user()
    assert broker.cli("token", "revoke", token).returncode == 0
    assert broker.api(token)("GET", "/whoami").status_code == 401


def test_same_code_registers_to_the_same_id(api, other_api):
    first = api.function("01\nsame-code")
    assert api.function("01\nsame-code") == first
    assert api.function("01\nother-code") != first
    assert other_api.function("01\nsame-code") != first  # ids are per user
    info = api.ok("GET", f"/functions/{first}")
    assert info["function_id"] == first and info["function_name"] == "f"
    r = other_api("GET", f"/functions/{first}")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"


def test_endpoint_ownership(api, other_api):
    first = api.register()
    eid = first["endpoint_id"]
    again = api.ok("PUT", f"/endpoints/{eid}", json={"name": "renamed", "metadata": {"a": 1}})
    # Its queue's name is the broker's secret, the same at every registration.
    assert again["task_queue"] == first["task_queue"]
    assert eid not in again["task_queue"] and again["task_queue"].startswith("fnrelay.endpoint.")
    assert again["amqp_url"].startswith("amqp://")
    r = other_api("PUT", f"/endpoints/{eid}", json={"name": "mine", "metadata": {}})
    unknown = other_api("PUT", f"/endpoints/{uuid.uuid4()}", json={"name": "x", "metadata": {}})
    assert r.status_code == unknown.status_code == 404  # not yours = unknown
    assert r.json()["code"] == "NOT_FOUND"
    assert other_api("GET", f"/endpoints/{eid}/status").status_code == 404
    listed = api.ok("GET", "/endpoints")["endpoints"]
    assert [e["name"] for e in listed if e["endpoint_id"] == eid] == ["renamed"]
    assert all(e["endpoint_id"] != eid for e in other_api.ok("GET", "/endpoints")["endpoints"])


def test_endpoint_id_must_be_a_uuid(api):
    r = api("PUT", "/endpoints/not-a-uuid", json={"name": "x"})
    assert r.status_code == 422 and r.json()["code"] == "INVALID_REQUEST"
    assert "endpoint_id" in r.json()["message"]


def _submit_raw(api, body: dict, key: str | None = None) -> requests.Response:
    return api("POST", "/submit", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})


def test_unknown_function_or_endpoint_is_404_and_stores_nothing(api, other_api):
    eid, fid = api.endpoint(), api.function()
    group = str(uuid.uuid4())
    bogus = str(uuid.uuid4())
    cases = [
        (bogus, fid, bogus),  # unknown endpoint
        (eid, bogus, bogus),  # unknown function
        (other_api.endpoint(), fid, "endpoint"),  # someone else's endpoint
        (eid, other_api.function(), "function"),  # someone else's function
    ]
    for endpoint_id, function_id, mentioned in cases:
        body = {"endpoint_id": endpoint_id, "task_group_id": group,
                "tasks": [{"function_id": function_id, "payload": "03\n[]"}]}
        r = _submit_raw(api, body)
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "NOT_FOUND" and mentioned in r.json()["message"]
    assert api("GET", f"/task_groups/{group}").status_code == 404  # nothing was created


def test_submit_needs_an_idempotency_key_and_valid_fields(api):
    eid, fid = api.endpoint(), api.function()
    body = {"endpoint_id": eid, "tasks": [{"function_id": fid, "payload": "03\n[]"}]}
    r = api("POST", "/submit", json=body)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["message"]
    r = _submit_raw(api, {"endpoint_id": eid, "tasks": [{"function_id": fid}]})
    assert r.status_code == 422 and "tasks.0.payload" in r.json()["message"]


def test_repeated_idempotency_key_returns_the_first_answer(api, other_api):
    eid, fid = api.endpoint(), api.function()
    key = str(uuid.uuid4())
    first = api.submit(eid, fid, n=3, key=key)
    again = api.submit(eid, fid, n=3, key=key)
    assert again == first
    group = api.ok("GET", f"/task_groups/{first['task_group_id']}")
    assert group["task_ids"] == first["task_ids"]  # submission order, no duplicates
    # the same key from another user is another request
    o_eid, o_fid = other_api.endpoint(), other_api.function()
    assert other_api.submit(o_eid, o_fid, key=key)["task_ids"] != first["task_ids"]


def test_oversized_body_is_413_and_stores_nothing(api, broker):
    eid, fid = api.endpoint(), api.function()
    group = str(uuid.uuid4())
    body = {"endpoint_id": eid, "task_group_id": group,
            "tasks": [{"function_id": fid, "payload": "03\n" + "x" * (2 * 1024 * 1024)}]}
    r = _submit_raw(api, body)
    assert r.status_code == 413
    err = r.json()
    assert err["code"] == "PAYLOAD_TOO_LARGE" and err["http_status"] == 413
    assert "1048576 bytes" in err["message"]  # the limit
    assert str(len(r.request.body)) in err["message"]  # the size
    assert api("GET", f"/task_groups/{group}").status_code == 404


def test_other_users_tasks_are_not_found(api, other_api):
    answer = api.submit(api.endpoint(), api.function())
    tid = answer["task_ids"][0]
    assert other_api("GET", f"/tasks/{tid}").status_code == 404
    assert other_api("POST", f"/tasks/{tid}/cancel").status_code == 404
    assert other_api("GET", f"/task_groups/{answer['task_group_id']}").status_code == 404
    st = other_api.ok("POST", "/tasks/batch_status", json={"task_ids": [tid]})
    assert st == {"tasks": {}, "unknown": [tid]}
    mine = api.ok("POST", "/tasks/batch_status", json={"task_ids": [tid, "nope"]})
    assert mine["unknown"] == ["nope"] and mine["tasks"][tid]["pending"] is True


def test_version_needs_no_token(broker):
    assert requests.get(f"{broker.url}/v1/version", timeout=10).json() == {
        "version": "0.1.0", "protocol": 1}
