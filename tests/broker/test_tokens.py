"""Tokens: stored hashed, revocable at once, scoped (user vs endpoint); and sharing an endpoint
only through a function allowlist."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid

import pytest


def _user(broker) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    name = f"user-{uuid.uuid4().hex[:8]}"
    return name, broker.add_user(name)


def _new_token(broker, *args: str) -> str:  # type: ignore[no-untyped-def]
    out = broker.cli("token", "create", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_tokens_are_random_and_stored_only_as_hashes(broker):
    _, token = _user(broker)
    other = _user(broker)[1]
    assert token != other and len(token) >= 40
    path = broker.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        stored = {row[0] for row in db.execute("SELECT hash FROM tokens")}
        dump = "\n".join(db.iterdump())
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert token not in dump


def test_a_revoked_token_is_refused_at_once(broker):
    name, token = _user(broker)
    spare = _new_token(broker, name)
    api = broker.api(token)
    assert api("GET", "/whoami").status_code == 200
    out = broker.cli("token", "revoke", token)
    assert out.returncode == 0, out.stderr
    r = api("GET", "/whoami")
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    assert broker.api(spare).ok("GET", "/whoami")["username"] == name  # others still work
    again = broker.cli("token", "revoke", token)
    assert again.returncode != 0 and "revoked" in again.stderr and "Traceback" not in again.stderr


def test_endpoint_token_may_only_register_its_endpoint(broker):
    name, token = _user(broker)
    user = broker.api(token)
    eid = user.endpoint()  # an endpoint token is for an endpoint its user has
    ep = broker.api(_new_token(broker, name, "--endpoint", eid))
    reg = ep.ok("PUT", f"/endpoints/{eid}", json={"name": "scoped", "metadata": {}})
    assert reg["endpoint_id"] == eid
    assert ep.ok("GET", "/whoami")["endpoint_id"] == eid
    assert ep.ok("GET", f"/endpoints/{eid}/status")["endpoint_id"] == eid
    r = ep("PUT", f"/endpoints/{uuid.uuid4()}", json={"name": "other", "metadata": {}})
    assert r.status_code == 403 and eid in r.json()["message"]
    fid = user.function()
    tid = user.submit(eid, fid)["task_ids"][0]
    refused = [
        ep("POST", "/functions", json={"function": "01\nx"}),
        ep("GET", f"/functions/{fid}"),
        ep("POST", "/submit", json={"endpoint_id": eid, "tasks": [
            {"function_id": fid, "payload": "03\n[]"}]},
            headers={"Idempotency-Key": str(uuid.uuid4())}),
        ep("GET", f"/tasks/{tid}"),
        ep("POST", "/tasks/batch_status", json={"task_ids": [tid]}),
        ep("POST", f"/tasks/{tid}/cancel"),
        ep("GET", "/endpoints"),
        ep("POST", "/endpoints", json={"name": "another", "metadata": {}}),
        ep("GET", f"/endpoints/{uuid.uuid4()}/status"),
        ep("DELETE", f"/endpoints/{eid}"),
        ep("POST", "/task_groups", json={}),
    ]
    for r in refused:
        assert r.status_code == 403, (r.request.method, r.request.url, r.text)
        assert "endpoint token" in r.json()["message"], r.text
    assert user.ok("GET", f"/tasks/{tid}")["status"] != "cancelled"


def test_token_create_rejects_a_bad_endpoint_id(broker):
    name, _ = _user(broker)
    out = broker.cli("token", "create", name, "--endpoint", "not-a-uuid")
    assert out.returncode != 0
    assert "not an endpoint id" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["", " padded", "two\nlines", "x" * 201])
def test_user_add_refuses_names_nobody_could_type_again(broker, name: str):
    out = broker.cli("user", "add", name)
    assert out.returncode == 2, out.stdout
    assert "Invalid value for 'NAME'" in out.stderr and "Traceback" not in out.stderr
    assert "created user" not in out.stdout


@pytest.fixture
def owner(broker):  # type: ignore[no-untyped-def]
    return broker.api()


@pytest.fixture
def guest(broker):  # type: ignore[no-untyped-def]
    return broker.api()


def _submit(api, eid: str, fid: str):  # type: ignore[no-untyped-def]
    return api("POST", "/submit", json={"endpoint_id": eid, "tasks": [
        {"function_id": fid, "payload": "03\n[]"}]},
        headers={"Idempotency-Key": str(uuid.uuid4())})


def test_a_single_user_endpoint_is_shared_only_through_its_allowlist(owner, guest):
    code = f"01\nshared-{uuid.uuid4()}"
    allowed = owner.function(code)
    private = owner.endpoint()
    shared = owner.endpoint({"allowed_functions": [allowed]})
    same_code, other_code = guest.function(code), guest.function()
    assert same_code != allowed  # function ids are per user: matched by their code
    # Without an allowlist the endpoint is the owner's alone: others see nothing.
    assert _submit(guest, private, same_code).status_code == 404
    ok = _submit(guest, shared, same_code)
    assert ok.status_code == 200, ok.text
    tid = ok.json()["task_ids"][0]
    assert guest.ok("GET", f"/tasks/{tid}")["endpoint_id"] == shared
    assert owner("GET", f"/tasks/{tid}").status_code == 404  # the task stays the guest's
    r = _submit(guest, shared, other_code)
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    assert other_code in r.json()["message"] and "allowed_functions" in r.json()["message"]
    # Nor does sharing show the endpoint itself to others.
    assert guest("GET", f"/endpoints/{shared}/status").status_code == 404
    assert _submit(owner, shared, owner.function()).status_code == 200  # the owner: anything


def test_allowlist_may_name_code_digests_and_must_be_a_list(owner, guest):
    code = f"01\ndigest-{uuid.uuid4()}"
    digest = hashlib.sha256(code.encode()).hexdigest()
    eid = owner.endpoint({"allowed_functions": [digest]})
    assert _submit(guest, eid, guest.function(code)).status_code == 200
    r = owner("PUT", f"/endpoints/{eid}",
              json={"name": "d", "metadata": {"allowed_functions": "everything"}})
    assert r.status_code == 422 and "allowed_functions" in r.json()["message"]
