"""A broker with `--queue-type quorum` and a list of AMQP URLs, on one RabbitMQ node (a quorum
queue runs on one node too; tests/chaos/test_cluster_chaos.py runs a real cluster): every
durable queue fnrelay declares is a quorum queue, the endpoint and the Executor consume and
publish on them without a 406, and every party is handed the whole list, with its own
credentials on each URL, and connects past a node that does not answer.

A broker of this module's own (own vhost, per-party accounts, so the direct path is on).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests

from fnrelay import Client, Executor
from fnrelay.amqp import join_urls, split_urls
from fnrelay.devstack.processes import free_port
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from support.session import MARKER


def double(x):
    return 2 * x


@dataclass
class QuorumStack:
    broker: BrokerServer
    vhost: str
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, new_vhost, rabbitmq) -> Iterator[QuorumStack]:
    tmp = tmp_path_factory.mktemp("quorum")
    url = new_vhost("fnrelay-quorum")
    parts = urlsplit(url)
    # A node that is down (nothing listens on its port) comes first: everyone fails over.
    dead = parts._replace(netloc=f"{parts.netloc.rpartition(':')[0]}:{free_port()}").geturl()
    broker = BrokerServer(tmp / "broker", join_urls([dead, url]), marker=MARKER,
                          management_url=rabbitmq.management_url,
                          extra_args=["--heartbeat-period", "1", "--queue-type", "quorum"])
    broker.start()
    yield QuorumStack(broker, unquote(parts.path[1:]), tmp)
    broker.stop()


def _queues(rabbitmq, vhost: str) -> list[dict]:
    r = requests.get(f"{rabbitmq.management_url}/api/queues/{vhost}", auth=rabbitmq.admin_auth,
                     timeout=10)
    r.raise_for_status()
    return r.json()


def test_every_durable_queue_is_quorum_and_every_party_fails_over(stack, rabbitmq):
    token = stack.broker.add_user(f"quorum-{uuid.uuid4().hex[:6]}")
    ep = LocalEndpoint(stack.tmp / "ep", "quorum", stack.broker.url, token,
                       marker=MARKER).configure(max_workers=2)
    ep.start(foreground=True)
    try:
        client = Client(stack.broker.url, token)
        with Executor(ep.endpoint_id, client=client) as ex:
            assert [f.result(timeout=120) for f in [ex.submit(double, i)
                                                    for i in range(20)]] == [
                2 * i for i in range(20)]
        group = client.create_task_group(ex.task_group_id)
        queues = _queues(rabbitmq, stack.vhost)
    finally:
        ep.stop()
    durable = [q for q in queues if q["durable"]]
    names = {q["name"] for q in durable}
    assert {"fnrelay.broker.results", "fnrelay.deadletter"} <= names
    assert any(n.endswith(".tasks") for n in names)  # the endpoint's
    assert any(n.startswith("fnrelay.group.") for n in names)
    assert {q["name"]: q["type"] for q in durable} == {n: "quorum" for n in names}
    group_queue = next(q for q in durable if q["name"] == group["queue"])
    assert group_queue["arguments"]["x-expires"] > 0
    assert all(q["type"] == "classic" for q in queues if q["exclusive"])
    urls = split_urls(group["amqp_url"])
    assert len(urls) == 2 and all(urlsplit(u).username == f"fnrelay-group-{ex.task_group_id}"
                                  for u in urls)


def test_the_default_stays_classic_with_no_queue_type_argument(broker, rabbitmq):
    [results] = [q for q in _queues(rabbitmq, "%2F") if q["name"] == "fnrelay.broker.results"]
    assert results["type"] == "classic"
    assert "x-queue-type" not in results["arguments"]
