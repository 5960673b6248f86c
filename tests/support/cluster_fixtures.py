"""The session's three-node RabbitMQ cluster (about 15 s and 430 MB): started only when a test
asks for it, and stopped at the end of the session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from fnrelay.devstack.rabbitmq import make_shared_tmpdir
from fnrelay.devstack.rabbitmq_cluster import RabbitMQCluster
from support.session import MARKER, discard_node

CLUSTER_NODES = 3


@pytest.fixture(scope="session")
def rabbitmq_cluster() -> Iterator[RabbitMQCluster]:
    """Three RabbitMQ nodes joined into one cluster (.amqp_url lists every node's URL).
    Tests that stop or kill a node start it again before they end."""
    path = make_shared_tmpdir("fnrelay-cluster-")
    cluster = RabbitMQCluster(path, CLUSTER_NODES, marker=MARKER).start()
    yield cluster
    for node in cluster.nodes:
        discard_node(node)
    shutil.rmtree(path, ignore_errors=True)
