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
from fnrelay.devstack.services import BrokerServer, LocalEndpoint


@dataclass
class PrivateStack:
    dir: Path
    marker: str
    rabbitmq: RabbitMQServer
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


def private_stack(marker: str, broker_args: list[str] | None = None) -> Iterator[PrivateStack]:
    """Start RabbitMQ and a broker (1 s heartbeats, offline after 4 s); stop all at the end."""
    path = make_shared_tmpdir("fnrelay-private-")
    rabbit = RabbitMQServer(path / "rabbitmq", marker=marker).start()
    broker = BrokerServer(path / "broker", rabbit.amqp_url, marker=marker,
                          extra_args=["--heartbeat-period", "1", "--heartbeat-threshold", "4",
                                      *(broker_args or [])])
    stack = None
    try:
        broker.start()
        stack = PrivateStack(path, marker, rabbit, broker, broker.add_user("carol"))
        yield stack
    finally:
        for ep in stack.endpoints if stack else []:
            ep.stop()
        broker.stop()
        rabbit.stop()
