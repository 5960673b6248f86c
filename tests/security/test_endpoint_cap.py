"""A tenant cannot make endpoints without end (`--max-endpoints-per-user`): each costs the
service a RabbitMQ account and queues. Registering them and submitting to someone's multi-user
endpoint with ever-new `user_endpoint_config`s (each makes a child owned by the submitter)
count alike; the refusal is a clear 403 TOO_MANY_ENDPOINTS, which the SDK and the endpoint's
CLI show as it is. One broker of this module's own, with per-party RabbitMQ accounts."""

from __future__ import annotations

import uuid

import pytest

from fnrelay import Client, errors
from fnrelay_endpoint.broker_api import BrokerAPI

CAP = 3


@pytest.fixture(scope="module")
def capped(start_broker, new_vhost, rabbitmq):  # type: ignore[no-untyped-def]
    return start_broker(new_vhost("fnrelay-endpoint-cap"), None, "--amqp-management-url",
                        rabbitmq.management_url, "--max-endpoints-per-user", str(CAP))


def _refused(r) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["code"] == "TOO_MANY_ENDPOINTS"
    assert f"limit of {CAP} per user" in body["message"]


def _submit(api, eid: str, fid: str, config: dict):  # type: ignore[no-untyped-def]
    return api("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())}, json={
        "endpoint_id": eid, "tasks": [{"function_id": fid, "payload": "03\n[[], {}]",
                                       "user_endpoint_config": config}]})


def test_registering_endpoints_stops_at_the_cap(capped) -> None:  # type: ignore[no-untyped-def]
    mallory = capped.api()
    made = [mallory.endpoint() for _ in range(CAP)]
    _refused(mallory("POST", "/endpoints", json={"name": "one-more", "metadata": {}}))
    root = mallory.base.removesuffix("/v1")  # Globus Compute's registration counts too
    _refused(mallory.http.post(f"{root}/v3/endpoints", timeout=30, json={
        "endpoint_name": "gc", "display_name": "gc"}))
    assert len(mallory.ok("GET", "/endpoints")["endpoints"]) == CAP
    # The endpoint's CLI says the broker's words, not "the token was refused".
    with pytest.raises(errors.EndpointLimitError, match="too many endpoints"):
        BrokerAPI(capped.url, mallory.http.headers["Authorization"].split()[1]
                  ).create_endpoint("ep", {})
    # Deleting one makes room again.
    mallory.ok("DELETE", f"/endpoints/{made[0]}")
    mallory.endpoint()


def test_child_endpoints_of_a_multi_user_endpoint_count_too(capped) -> None:  # type: ignore[no-untyped-def]
    alice, mallory = capped.api(), capped.api()
    manager = alice.endpoint({"multi_user": True})
    fid = mallory.function()
    mallory.endpoint()  # one of her own, and CAP - 1 children
    for n in range(CAP - 1):
        assert _submit(mallory, manager, fid, {"n": n}).status_code == 200
    def task_ids() -> set[str]:
        return {t["task_id"] for t in mallory.ok("GET", "/tasks")["tasks"]}

    before = task_ids()
    _refused(_submit(mallory, manager, fid, {"n": CAP}))
    assert task_ids() == before  # nothing of it was stored
    assert len(mallory.ok("GET", "/endpoints")["endpoints"]) == CAP
    # A config she has a child for needs no new one; the manager's owner is not limited by
    # her children.
    assert _submit(mallory, manager, fid, {"n": 0}).status_code == 200
    assert _submit(alice, manager, alice.function(), {"n": CAP}).status_code == 200

    # The SDK raises the broker's message.
    client = Client(capped.url, mallory.http.headers["Authorization"].split()[1])
    with pytest.raises(errors.EndpointLimitError, match="too many endpoints") as caught:
        batch = client.create_batch(user_endpoint_config={"n": "sdk"})
        batch.add(fid, [1])
        client.batch_run(manager, batch)
    assert caught.value.code == "TOO_MANY_ENDPOINTS"
