"""Globus Compute's submit route waits for the database off the event loop: while one user's
submit waits (here for the per-user quota lock another transaction holds), the broker still
answers everyone else. On the loop, one slow submit would stall every request."""

from __future__ import annotations

import concurrent.futures as cf

import requests
from sqlalchemy import create_engine, text

from support.waiting import wait_for

#: Ample for a request that nothing holds up; a stalled loop never answers within it.
ANSWER = 60.0


def test_a_waiting_gc_submit_leaves_other_requests_answered(start_broker, new_vhost,
                                                            postgres):
    db_url = postgres.create_database()
    broker = start_broker(new_vhost("fnrelay-gc-loop"), db_url, "--max-queued-per-user", "9")
    alice = broker.api()
    user_id = alice.ok("GET", "/whoami")["user_id"]
    eid = alice.endpoint()
    auth = {"Authorization": alice.http.headers["Authorization"]}
    fid = requests.post(f"{broker.url}/v2/functions", headers=auth, timeout=30, json={
        "function_name": "f", "function_code": "1\nx"}).json()["function_uuid"]
    engine = create_engine(db_url)
    with engine.connect() as holder, cf.ThreadPoolExecutor(2) as pool:
        # The lock tasks.check_quota takes per user: Alice's submit waits for it.
        holder.execute(text("SELECT pg_advisory_lock(hashtext(:u))"), {"u": user_id})
        try:
            submit = pool.submit(requests.post, f"{broker.url}/v3/endpoints/{eid}/submit",
                                 headers=auth, timeout=300,
                                 json={"tasks": {fid: ["1\na1\nb"]}})
            wait_for(lambda: holder.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )).scalar(), "the submit to wait for the lock")
            version = pool.submit(requests.get, f"{broker.url}/v2/version", timeout=300)
            assert version.result(timeout=ANSWER).ok  # answered while the submit waits
            assert not submit.done()
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(hashtext(:u))"), {"u": user_id})
        assert submit.result(timeout=ANSWER).status_code == 200
    engine.dispose()
