"""The broker's ingest is fair too: one user's flood of direct-path records does not stand in
front of another user's result.

An Executor on the direct path publishes its tasks' records to the broker faster than the
broker writes them, so a flood leaves a backlog of records in RabbitMQ. Results somebody
waits for go to a queue of their own (and on a connection of their own), so a lone user's
call is recorded and answered while that backlog drains. Here the backlog is made certain:
the broker is stopped while Mallory's Executor publishes the flood (to her own endpoint,
which never runs, so only records reach the broker), then started again, and Bob makes one
call on Alice's shared endpoint. Behaviour, not timing: the assertion counts the flood's
records still unwritten when Bob's result came; with one queue for both there were none.
"""

from __future__ import annotations

import sqlite3
import time
import uuid

import pika
import pika.exceptions
import requests

from fnrelay import Client, Executor, wire
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from support.direct_path import direct_ready
from support.leftover_watchers import abandon
from support.session import MARKER
from support.waiting import wait_for

FLOOD = 30_000


def noop(x):  # type: ignore[no-untyped-def]
    return x


def lone_task(x):  # type: ignore[no-untyped-def]
    return 2 * x


def _queued(amqp_url: str) -> int:
    """Messages ready in the broker's inbound queues (those that exist)."""
    total = 0
    for queue in wire.BROKER_INBOUND_QUEUES:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            total += conn.channel().queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            pass  # no such queue
        finally:
            if conn.is_open:
                conn.close()
    return total


def _recorded(db_url: str, task_ids: list[str]) -> int:
    """How many of `task_ids` the broker has written."""
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.execute("CREATE TEMP TABLE wanted (id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO wanted VALUES (?)", [(t,) for t in task_ids])
        return db.execute("SELECT count(*) FROM tasks JOIN wanted USING (id)").fetchone()[0]


def _settled(amqp_url: str) -> bool:
    """Has the inbound backlog stopped growing (the Executor's last records are out)? Alice's
    endpoint would add a heartbeat every period: the broker sets a long one."""
    before = _queued(amqp_url)
    time.sleep(1.0)
    return before > 0 and _queued(amqp_url) == before


def test_a_lone_result_is_not_recorded_behind_a_flood_of_records(tmp_path, new_vhost,
                                                                  rabbitmq):
    amqp = new_vhost("fnrelay-fair-ingest")
    broker = BrokerServer(tmp_path / "broker", amqp, marker=MARKER,
                          management_url=rabbitmq.management_url,
                          # No heartbeat while the flood is counted in (see _settled).
                          extra_args=["--heartbeat-period", "3600"])
    broker.start()
    ep = None
    try:
        tokens = {n: broker.add_user(f"{n}-{uuid.uuid4().hex[:6]}")
                  for n in ("alice", "bob", "mallory")}
        alice, bob, mallory = (Client(broker.url, tokens[n]) for n in ("alice", "bob",
                                                                       "mallory"))
        idle = requests.post(f"{broker.url}/v1/endpoints",  # registered, never started
                             json={"name": "idle", "metadata": {}}, timeout=30,
                             headers={"Authorization": f"Bearer {tokens['mallory']}"})
        idle.raise_for_status()
        ep = LocalEndpoint(tmp_path / "ep", "shared", broker.url, tokens["alice"],
                           marker=MARKER).configure(max_workers=1)
        ep.start(foreground=True)
        alice.put(f"endpoints/{ep.endpoint_id}", data={"name": "shared", "metadata": {
            "allowed_functions": [alice.register_function(lone_task)]}})
        # Not a context manager: its tasks never run, and leaving one waits for them.
        flood_ex = direct_ready(Executor(idle.json()["endpoint_id"], client=mallory))
        try:
            with Executor(ep.endpoint_id, client=bob) as lone_ex:
                assert lone_ex.submit(lone_task, 1).result(timeout=60) == 2
                first = flood_ex.submit(noop, -1)  # registers; granted the direct path
                wait_for(lambda: first.task_id, "the flood's first submit", 60)
                broker.stop()
                flood = [flood_ex.submit(noop, i) for i in range(FLOOD)]
                wait_for(lambda: all(f.task_id for f in flood), "the flood's submits", 300)
                wait_for(lambda: _settled(amqp), "the flood's records to be published", 300)
                broker.start()
                assert lone_ex.submit(lone_task, 21).result(timeout=120) == 42
                ids = [str(f.task_id) for f in flood]
                unwritten = FLOOD - _recorded(broker.db_url, ids)
                wait_for(lambda: _recorded(broker.db_url, ids) == FLOOD, "every record", 600)
        finally:
            abandon(flood_ex)
        assert unwritten > 0, "the lone result was recorded after the whole flood's records"
    finally:
        if ep is not None:
            ep.stop()
        broker.stop()
