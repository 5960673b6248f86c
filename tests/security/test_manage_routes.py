"""Another tenant with an ordinary account attacks the routes behind Client's
get_endpoint_metadata, get_allowed_functions, stop_endpoint and delete_function.

One broker with per-party RabbitMQ accounts (`--amqp-management-url`), as deployed. Alice is
the victim, Mallory the attacker: each of her requests must be answered exactly as for an id
that does not exist (404), and change nothing of Alice's.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest


@pytest.fixture(scope="module")
def amqp_url(new_vhost) -> str:  # type: ignore[no-untyped-def]
    return new_vhost("fnrelay-manage-test")


@pytest.fixture(scope="module")
def manage_broker(start_broker, amqp_url, rabbitmq):  # type: ignore[no-untyped-def]
    return start_broker(amqp_url, None, "--amqp-management-url", rabbitmq.management_url)


@pytest.fixture
def alice(manage_broker):  # type: ignore[no-untyped-def]
    return manage_broker.api()


@pytest.fixture
def mallory(manage_broker):  # type: ignore[no-untyped-def]
    return manage_broker.api()


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _endpoint_token(broker, api, eid: str):  # type: ignore[no-untyped-def]
    username = api.ok("GET", "/whoami")["username"]
    out = broker.cli("token", "create", username, "--endpoint", eid)
    assert out.returncode == 0, out.stderr
    return broker.api(out.stdout.strip().splitlines()[-1])


def test_anothers_endpoint_is_unknown_to_every_manage_route(alice, mallory):
    eid = alice.endpoint({"allowed_functions": [_digest("01\nshared")]})
    mallory_fn = mallory.function("01\nshared")
    unknown = str(uuid.uuid4())
    for method, path in (("GET", "/endpoints/{}"), ("GET", "/endpoints/{}/allowed_functions"),
                         ("POST", "/endpoints/{}/stop")):
        theirs, nobodys = mallory(method, path.format(eid)), mallory(method, path.format(unknown))
        assert theirs.status_code == nobodys.status_code == 404, theirs.text
        assert theirs.json()["message"] == nobodys.json()["message"].replace(unknown, eid)
    # Mallory's stop changed nothing: Alice's endpoint registers, and is still shared with her.
    assert "stopped_until" not in alice.ok("GET", f"/endpoints/{eid}")["metadata"]
    alice.ok("PUT", f"/endpoints/{eid}", json={"name": "ep", "metadata": {}})
    mallory.submit(eid, mallory_fn)
    # The owner reads both.
    assert alice.ok("GET", f"/endpoints/{eid}/allowed_functions")["restricted"] is True


def test_anothers_function_cannot_be_deleted(alice, mallory):
    fid = alice.function()
    assert mallory("DELETE", f"/functions/{fid}").status_code == 404
    assert alice.ok("GET", f"/functions/{fid}")["function_id"] == fid
    assert alice.ok("DELETE", f"/functions/{fid}") == {"function_id": fid, "deleted": True}
    assert alice("GET", f"/functions/{fid}").status_code == 404


def test_an_endpoint_token_may_not_use_them(manage_broker, alice):
    eid = alice.endpoint()
    ep_token = _endpoint_token(manage_broker, alice, eid)
    fid = alice.function()
    for method, path in (("GET", f"/endpoints/{eid}"),
                         ("GET", f"/endpoints/{eid}/allowed_functions"),
                         ("POST", f"/endpoints/{eid}/stop"), ("DELETE", f"/functions/{fid}")):
        assert ep_token(method, path).status_code == 403, path


def test_a_stop_cannot_be_lifted_by_the_endpoint_nor_set_by_a_client(manage_broker, alice):
    eid = alice.endpoint()
    ep_token = _endpoint_token(manage_broker, alice, eid)
    answer = alice.ok("POST", f"/endpoints/{eid}/stop")
    assert answer["stopped"] is True
    for api in (alice, ep_token):
        r = api("PUT", f"/endpoints/{eid}", json={"name": "ep", "metadata": {}})
        assert r.status_code == 409 and "stopped by its owner" in r.json()["message"]
        r = api("PUT", f"/endpoints/{eid}", json={"name": "ep",
                                                  "metadata": {"stopped_until": 0}})
        assert r.status_code == 422, r.text
    other = alice.endpoint()
    r = alice("PUT", f"/endpoints/{other}", json={"name": "ep",
                                                  "metadata": {"stopped_until": 1e12}})
    assert r.status_code == 422  # nobody stops an endpoint by writing its metadata
