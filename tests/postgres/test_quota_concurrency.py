"""The per-user quota holds under concurrent submits on PostgreSQL: each request counts the
user's unfinished tasks after the previous one of the same user committed (an advisory lock),
so a burst of parallel requests cannot pass the limit together."""

from __future__ import annotations

import concurrent.futures as cf
import uuid

LIMIT = 5
REQUESTS = 16


def test_parallel_submits_of_one_user_never_pass_the_quota(start_broker, new_vhost, postgres):
    broker = start_broker(new_vhost("fnrelay-quota-pg"), postgres.create_database(),
                          "--max-queued-per-user", str(LIMIT))
    alice = broker.api()
    eid, fid = alice.endpoint(), alice.function()  # no endpoint runs: tasks stay unfinished

    def submit(i: int) -> int:
        return alice("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())},
                     json={"endpoint_id": eid,
                           "tasks": [{"function_id": fid, "payload": f"03\n[{i}]"}]}
                     ).status_code

    with cf.ThreadPoolExecutor(REQUESTS) as pool:
        codes = list(pool.map(submit, range(REQUESTS)))
    assert sorted(codes) == [200] * LIMIT + [429] * (REQUESTS - LIMIT), codes
    assert len(alice.ok("GET", "/tasks")["tasks"]) == LIMIT
