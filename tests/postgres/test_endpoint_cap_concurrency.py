"""The cap on endpoints per user holds under concurrent requests on PostgreSQL: registrations
and submits that make child endpoints count under the same advisory lock on the user, so a
burst of them cannot pass the cap together."""

from __future__ import annotations

import concurrent.futures as cf
import uuid

CAP = 3
EACH = 8


def test_parallel_registrations_and_new_children_never_pass_the_cap(
        start_broker, new_vhost, postgres) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(new_vhost("fnrelay-endpoint-cap-pg"), postgres.create_database(),
                          "--max-endpoints-per-user", str(CAP))
    alice, mallory = broker.api(), broker.api()
    manager = alice.endpoint({"multi_user": True})
    fid = mallory.function()

    def register(i: int) -> int:
        return mallory("POST", "/endpoints", json={"name": f"ep{i}", "metadata": {}}
                       ).status_code

    def new_child(i: int) -> int:
        return mallory("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())},
                       json={"endpoint_id": manager, "tasks": [{
                           "function_id": fid, "payload": "03\n[[], {}]",
                           "user_endpoint_config": {"n": i}}]}).status_code

    with cf.ThreadPoolExecutor(2 * EACH) as pool:
        codes = [f.result() for f in [pool.submit(register, i) for i in range(EACH)]
                 + [pool.submit(new_child, i) for i in range(EACH)]]
    assert sorted(codes) == [200] * CAP + [403] * (2 * EACH - CAP), codes
    assert len(mallory.ok("GET", "/endpoints")["endpoints"]) == CAP
