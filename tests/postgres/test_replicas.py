"""Two broker replicas (two `fnrelay-broker serve` processes) on one PostgreSQL database and one
RabbitMQ serve the same users consistently: what goes in through one is read through the
other, every task is published to its endpoint once, and every result is recorded and
forwarded once although both replicas consume the one results queue.

Raw pika plays the endpoint (it reads its task queue and publishes results).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pika
import pytest

from fnrelay import wire
from support.waiting import wait_for

BATCHES = 40
PER_BATCH = 5


@pytest.fixture(scope="module")
def amqp_url(new_vhost) -> str:  # type: ignore[no-untyped-def]
    """A vhost of these replicas alone: the session's broker (another database) holds the
    shared one, and a broker of another deployment is refused there."""
    return new_vhost("fnrelay-replicas-test")


def _drain(ch, queue: str, kind: str) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Every message now on `queue` (acked)."""
    bodies = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        assert props.type == kind, (props.type, body)
        bodies.append(body)


def _task_ids(bodies: list[bytes]) -> list[str]:
    return [m.task_id for b in bodies for m in wire.decode_tasks(b)]


def _result_ids(bodies: list[bytes]) -> list[str]:
    return [r.task_id for b in bodies for r in wire.decode_results(b)]


def _publish_results(ch, endpoint_id: str, task_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    body = wire.encode_results([
        wire.ResultMessage(task_id=t, status="success", result=f"03\n{i}")
        for i, t in enumerate(task_ids)
    ])
    ch.basic_publish(
        wire.RESULTS_EXCHANGE, endpoint_id, body,
        pika.BasicProperties(type=wire.MSG_RESULTS, delivery_mode=2,
                             content_type=wire.CONTENT_TYPE),
    )


def test_two_replicas_serve_one_user_consistently(start_broker, amqp_url, amqp, postgres):
    db_url = postgres.create_database()
    with ThreadPoolExecutor(2) as pool:  # started together: they also migrate the empty db
        a, b = pool.map(lambda _: start_broker(amqp_url, db_url), range(2))
    token = a.add_user()  # a user made through one replica's database is known to both
    api_a, api_b = a.api(token), b.api(token)
    assert api_a.ok("GET", "/whoami") == api_b.ok("GET", "/whoami")

    # registered through A, used through B
    reg = api_a.register()
    eid, queue = reg["endpoint_id"], reg["task_queue"]
    # Both name its queue alike (the key of queue names is in the one database).
    again = api_b.ok("PUT", f"/endpoints/{eid}", json={"name": "ep", "metadata": {}})
    assert again["task_queue"] == queue
    fid = api_a.function("01\nreplicated-function")
    assert api_b.ok("GET", f"/functions/{fid}")["function_id"] == fid
    group = api_a.ok("POST", "/task_groups", json={})
    gid = group["task_group_id"]

    # submissions alternate between the replicas, so both publishers drain the one outbox
    submitted: list[str] = []
    for i in range(BATCHES):
        api = api_a if i % 2 == 0 else api_b
        submitted += api.submit(eid, fid, n=PER_BATCH, group=gid)["task_ids"]
    repeat = api_b.submit(eid, fid, n=1, group=gid, key="same-key")
    assert api_a.submit(eid, fid, n=1, group=gid, key="same-key") == repeat  # idempotent
    submitted += repeat["task_ids"]

    seen: list[str] = []
    wait_for(lambda: seen.extend(_task_ids(_drain(amqp, queue, wire.MSG_TASKS)))
             or set(seen) == set(submitted), "every task at the endpoint")

    # every result twice (at-least-once delivery), into the results queue both replicas consume
    _publish_results(amqp, eid, submitted)
    _publish_results(amqp, eid, submitted)

    def all_done():  # type: ignore[no-untyped-def]
        found = api_b.ok("POST", "/tasks/batch_status", json={"task_ids": submitted})["tasks"]
        return all(t["status"] == "success" for t in found.values()) and found

    through_b = wait_for(all_done, "every result recorded")
    through_a = api_a.ok("POST", "/tasks/batch_status", json={"task_ids": submitted})["tasks"]
    assert through_a == through_b
    for record in through_b.values():
        statuses = [h["status"] for h in record["history"]]
        assert statuses.count("success") == 1, statuses
        assert statuses.count("waiting-for-endpoint") == 1, statuses

    # Stopped replicas publish nothing more: now every message that ever went out is queued.
    assert a.stop() == 0 and b.stop() == 0
    seen += _task_ids(_drain(amqp, queue, wire.MSG_TASKS))
    assert Counter(seen) == Counter(submitted), "a task was published twice or not at all"
    forwarded = _result_ids(_drain(amqp, group["queue"], wire.MSG_RESULTS))
    assert Counter(forwarded) == Counter(submitted), "a result was forwarded twice or not at all"
