"""A local stack whose four client links each pass through a delay proxy (benchmarks.delay_proxy).

SDK-broker and endpoint-broker are two HTTP proxies in front of the broker (the SDK's Client
and the endpoint's broker_url point at one each). RabbitMQ has one proxy, whose address the
broker hands out as its public AMQP URL; a connection on it belongs to the SDK-RabbitMQ link
when it comes from an SDK process (this one, or a fresh one named in `sdk_pids`), else to the
endpoint-RabbitMQ link. The broker's own AMQP connection stays direct: broker and RabbitMQ sit
side by side in one data centre.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.delay_proxy import Calibration, DelayProxy, Link, ProxyThread

LINKS = ("sdk-broker", "sdk-rabbitmq", "endpoint-rabbitmq", "endpoint-broker")


@dataclass
class DelayedStack:
    """A running stack behind delay proxies; `set_delay` changes D while it runs."""

    links: dict[str, Link]
    sdk_broker_url: str
    token: str
    endpoint_id: str
    calibration: Calibration  # the delay line's own lateness, on the proxies' loop
    sdk_pids: set[int] = field(default_factory=set)

    def set_delay(self, seconds: float, only: str | None = None) -> None:
        """D on every link, or on link `only` alone (the others undelayed)."""
        for name, link in self.links.items():
            link.delay = seconds if only in (None, name) else 0.0

    def client(self) -> Any:
        from fnrelay import Client

        return Client(self.sdk_broker_url, self.token)

    def amqp_route(self, peer: tuple[str, int]) -> str:
        """SDK-RabbitMQ if one of the SDK processes holds the connecting socket."""
        for pid in self.sdk_pids:
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            if any(c.laddr and c.laddr.port == peer[1] for c in conns):
                return "sdk-rabbitmq"
        return "endpoint-rabbitmq"


@contextmanager
def delayed_stack(workers: int, log: Any = None) -> Iterator[DelayedStack]:
    """RabbitMQ, broker and endpoint with every client link proxied (D = 0 to begin with)."""
    import os

    from fnrelay.devstack.processes import reap_marked
    from fnrelay.devstack.rabbitmq import RabbitMQServer, make_shared_tmpdir, rabbitmq_dir_for
    from fnrelay.devstack.services import BrokerServer, LocalEndpoint

    say = log or (lambda _: None)
    base = make_shared_tmpdir("fnrelay-delay-")
    marker = str(base)
    proxies = ProxyThread()
    links = {name: Link(name, "amqp" if "rabbitmq" in name else "http") for name in LINKS}
    started: list[Any] = []
    calibration: Calibration | None = None
    try:
        rabbit = RabbitMQServer(rabbitmq_dir_for(base), marker=marker, log=say)
        rabbit.start()
        started.append(rabbit)
        calibration = Calibration(proxies)
        stack = DelayedStack(links, "", "", "", calibration, {os.getpid()})
        amqp_port = proxies.add(DelayProxy(
            ("127.0.0.1", rabbit.amqp_port or 0),
            {n: links[n] for n in ("sdk-rabbitmq", "endpoint-rabbitmq")}, stack.amqp_route))
        broker = BrokerServer(base / "broker", rabbit.amqp_url, marker=marker, log=say,
                              management_url=rabbit.management_url,
                              extra_args=["--public-amqp-url",
                                          f"amqp://127.0.0.1:{amqp_port}/%2F"]).start()
        started.append(broker)
        target = ("127.0.0.1", broker.port or 0)
        sdk_port = proxies.add(DelayProxy(target, {"sdk-broker": links["sdk-broker"]}))
        ep_port = proxies.add(DelayProxy(target, {"endpoint-broker": links["endpoint-broker"]}))
        stack.token = broker.add_user("local")
        stack.sdk_broker_url = f"http://127.0.0.1:{sdk_port}"
        endpoint = LocalEndpoint(base / "home", "default", f"http://127.0.0.1:{ep_port}",
                                 stack.token, marker=marker, log=say)
        started.append(endpoint)
        endpoint.configure(max_workers=workers).start()
        stack.endpoint_id = endpoint.endpoint_id
        yield stack
    finally:
        for part in reversed(started):
            try:
                part.stop()
            except Exception as e:  # noqa: BLE001 - stop the rest regardless
                say(f"stopping {type(part).__name__} failed: {e}")
        if calibration is not None:
            calibration.close()
        proxies.close()
        reap_marked(marker, say)
        shutil.rmtree(Path(base), ignore_errors=True)
