"""`fnrelay-broker queues migrate --to quorum`: a deployment's classic queues, with tasks
waiting in them, become quorum queues without losing a message; a broker with --queue-type
quorum then runs those tasks. It refuses while anything consumes (the broker runs).

A broker of this module's own (own vhost, per-party accounts) on the session's RabbitMQ.
"""

from __future__ import annotations

import os
import subprocess

import pika
import requests

from fnrelay import Client
from fnrelay.devstack.services import BrokerServer, LocalEndpoint, executable
from support.chaos_checks import statuses
from support.session import MARKER
from support.waiting import wait_for

TASKS = 30


def triple(x):
    return 3 * x


def _migrate(amqp_url: str, rabbitmq) -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable("fnrelay-broker"), "queues", "migrate", "--to", "quorum",
         "--amqp-management-url", rabbitmq.management_url],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FNRELAY_AMQP_URL": amqp_url})


def _queues(rabbitmq, vhost: str) -> dict[str, dict]:
    r = requests.get(f"{rabbitmq.management_url}/api/queues/{vhost}",
                     auth=rabbitmq.admin_auth, timeout=10)
    r.raise_for_status()
    return {q["name"]: q for q in r.json() if q["name"].startswith("fnrelay.")}


def _waiting(url: str, queue: str) -> int:
    """Messages in `queue` as RabbitMQ counts them now (the management API lags)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_classic_queues_become_quorum_with_their_messages(tmp_path, new_vhost, rabbitmq):
    url = new_vhost("fnrelay-migrate")
    vhost = url.rpartition("/")[2]
    broker = BrokerServer(tmp_path / "broker", url, marker=MARKER,
                          management_url=rabbitmq.management_url,
                          extra_args=["--heartbeat-period", "1"])
    broker.start()
    token = broker.add_user("migrator")
    ep = LocalEndpoint(tmp_path / "ep", "migrate", broker.url, token,
                       marker=MARKER).configure(max_workers=2)
    try:
        ep.start(foreground=True)
        ep.stop()  # registered: its queue exists; tasks wait in it
        client = Client(broker.url, token)
        fid = client.register_function(triple)
        ids = [client.run(i, endpoint_id=ep.endpoint_id, function_id=fid)
               for i in range(TASKS)]
        task_queue = next(n for n in _queues(rabbitmq, vhost) if n.endswith(".tasks"))
        wait_for(lambda: _waiting(url, task_queue) >= 1,
                 "the tasks to wait in the endpoint's queue", interval=0.5)

        refused = _migrate(url, rabbitmq)  # the broker still consumes its results queue
        assert refused.returncode == 1, refused.stderr
        assert "consumers" in refused.stderr and "Traceback" not in refused.stderr

        broker.stop()
        waiting = _waiting(url, task_queue)
        assert waiting >= 1
        before = _queues(rabbitmq, vhost)
        assert {q["type"] for q in before.values()} == {"classic"}
        done = _migrate(url, rabbitmq)
        assert done.returncode == 0, done.stderr
        after = _queues(rabbitmq, vhost)
        assert set(after) == set(before)  # no holding queue left, none lost
        assert {q["type"] for q in after.values()} == {"quorum"}
        assert _waiting(url, task_queue) == waiting
        assert all(q["arguments"].get("x-expires") == before[n]["arguments"].get("x-expires")
                   for n, q in after.items())

        broker.extra_args += ["--queue-type", "quorum"]
        broker.start()
        ep.start(foreground=True)
        wait_for(lambda: (s := statuses(client, ids)) and set(s.values()) == {"success"},
                 "every waiting task to run after the migration", timeout=120)
        assert [client.get_result(t) for t in ids] == [3 * i for i in range(TASKS)]
    finally:
        ep.stop()
        broker.stop()
