"""A whole fnrelay stack of one test module's own (RabbitMQ, broker, endpoints), for tests that
stop, kill and restart its parts without disturbing the session's shared servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnrelay import Client
from fnrelay.devstack.rabbitmq import RabbitMQServer, make_shared_tmpdir
from fnrelay.devstack.rabbitmq_cluster import RabbitMQCluster
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from support.vhosts import add_vhost, delete_vhost, on_vhost


@dataclass
class PrivateStack:
    dir: Path
    marker: str
    rabbitmq: RabbitMQServer | RabbitMQCluster
    broker: BrokerServer
    token: str
    endpoints: list[LocalEndpoint] = field(default_factory=list)

    def client(self) -> Client:
        return Client(self.broker.url, self.token)

    def endpoint(self, name: str, start: bool = True, **overrides: Any) -> LocalEndpoint:
        """An endpoint of this stack's user; overrides go into its config.yaml."""
        overrides.setdefault("max_workers", 2)
        home = self.dir / "endpoints" / f"{name}-{uuid.uuid4().hex[:6]}"
        ep = LocalEndpoint(home, name, self.broker.url, self.token,
                           marker=self.marker).configure(**overrides)
        self.endpoints.append(ep)
        if start:
            ep.start(foreground=True)
        return ep


def private_stack(marker: str, broker_args: list[str] | None = None,
                  cluster: RabbitMQCluster | None = None) -> Iterator[PrivateStack]:
    """Start RabbitMQ and a broker (1 s heartbeats, offline after 4 s); stop all at the end.

    With `cluster` (shared: not stopped here), the broker runs on a fresh vhost of it, with
    quorum queues and an account per party, as production does.
    """
    path = make_shared_tmpdir("fnrelay-private-")
    rabbit: RabbitMQServer | RabbitMQCluster
    extra, management, vhost = [], None, None
    if cluster is None:
        rabbit = RabbitMQServer(path / "rabbitmq", marker=marker).start()
        amqp_url = rabbit.amqp_url
    else:
        rabbit, management = cluster, cluster.management_url
        vhost = add_vhost(cluster.nodes[0].management_url, cluster.admin_auth, "chaos")
        amqp_url = on_vhost(cluster.amqp_url, vhost)
        extra = ["--queue-type", "quorum"]
    broker = BrokerServer(path / "broker", amqp_url, marker=marker, management_url=management,
                          extra_args=["--heartbeat-period", "1", "--heartbeat-threshold", "4",
                                      *extra, *(broker_args or [])])
    stack = None
    try:
        broker.start()
        stack = PrivateStack(path, marker, rabbit, broker, broker.add_user("carol"))
        yield stack
    finally:
        for ep in stack.endpoints if stack else []:
            ep.stop()
        broker.stop()
        if cluster is None:
            rabbit.stop()
        elif vhost is not None:
            delete_vhost(cluster.management_url, cluster.admin_auth, vhost)
