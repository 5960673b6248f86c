"""A RabbitMQ cluster on one host, for `fnrelay local up --rabbitmq-nodes N` and the tests.

Production RabbitMQ runs as a cluster with quorum queues; this one is its smallest faithful
copy: N `RabbitMQServer` nodes under one directory, each with its own name, ports and data,
sharing an Erlang cookie (nodes refuse peers with another) and the administrator's password,
joined with `rabbitmqctl join_cluster`. Clients reach it through the list of the nodes' URLs.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import threading
from pathlib import Path
from typing import Any

from fnrelay.amqp import join_urls
from fnrelay.config import private_mkdir, write_private
from fnrelay.devstack.processes import START_TIMEOUT, LocalStackError, Log, quiet
from fnrelay.devstack.rabbitmq import (
    RABBITMQ_USER,
    RabbitMQServer,
    _refuse_foreign_dir,
    is_root,
)

#: Written once the nodes have joined: a restart on kept data needs no join.
JOINED = "joined"


class RabbitMQCluster:
    """`nodes` RabbitMQ nodes under `dir`/node-1.. forming one cluster."""

    def __init__(self, dir: Path | str, nodes: int = 3, marker: str | None = None,
                 log: Log = quiet, kept: list[dict[str, Any]] | None = None):
        if nodes < 1:
            raise LocalStackError("a RabbitMQ cluster needs at least one node")
        self.dir = Path(dir).resolve()
        self.marker = marker or str(self.dir)
        self.log = log
        secret = self._kept_secret()
        self.cookie, password = secret["cookie"], secret["password"]
        kept = kept or [{} for _ in range(nodes)]
        self.nodes = [
            RabbitMQServer(self.dir / f"node-{i + 1}", k.get("amqp_port"), k.get("dist_port"),
                           k.get("management_port"), admin_password=password,
                           marker=self.marker, log=log, cookie=self.cookie)
            for i, k in enumerate(kept[:nodes] + [{}] * (nodes - len(kept)))]

    def _kept_secret(self) -> dict[str, str]:
        """The cookie and administrator password of every node, kept (0600) across restarts."""
        path = self.dir / "cluster.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
        secret = {"cookie": secrets.token_hex(20).upper(),
                  "password": secrets.token_urlsafe(18)}
        write_private(private_mkdir(self.dir) / path.name, json.dumps(secret))
        return secret

    # addresses
    @property
    def amqp_url(self) -> str:
        """The administrator's URLs, one per node: pika fails over from one to the next."""
        return join_urls([n.amqp_url for n in self.nodes])

    @property
    def management_url(self) -> str:
        """Every node's management API (the broker tries each in turn)."""
        return join_urls([n.management_url for n in self.nodes])

    @property
    def admin_auth(self) -> tuple[str, str]:
        return self.nodes[0].admin_auth

    def to_dict(self) -> list[dict[str, Any]]:
        return [n.to_dict() for n in self.nodes]

    # life cycle
    def start(self, timeout: float = START_TIMEOUT) -> RabbitMQCluster:
        """Boot every node side by side, then join the fresh ones to the first."""
        private_mkdir(self.dir)
        _refuse_foreign_dir(self.dir)
        if is_root():  # the nodes run as the rabbitmq user, who must enter their parent
            os.chown(self.dir, pwd.getpwnam(RABBITMQ_USER).pw_uid, -1, follow_symlinks=False)
        joined = (self.dir / JOINED).exists()
        used: list[int] = []
        for node in self.nodes:  # ports chosen one after the other: no two nodes share one
            node.launch(exclude=used)
            used += [p for p in (node.amqp_port, node.dist_port, node.management_port) if p]
        for node in self.nodes:
            node.wait_ready(timeout + 60 * joined)  # kept data: each waits for its peers
        if not joined:
            for node in self.nodes[1:]:
                self._join(node)
            write_private(self.dir / JOINED, "\n")
        self.log(f"RabbitMQ cluster of {len(self.nodes)} nodes is up")
        return self

    def _join(self, node: RabbitMQServer) -> None:
        first = self.nodes[0].nodename
        for args in (["stop_app"], ["reset"], ["join_cluster", first], ["start_app"]):
            out = node.ctl(*args, timeout=120)
            if out.returncode != 0:
                raise LocalStackError(f"rabbitmqctl {' '.join(args)} on {node.nodename} "
                                      f"failed: {(out.stderr or out.stdout).strip()[:300]}")
        node.wait_ready()

    def stop(self) -> None:
        stop_nodes(self.nodes)

    # what chaos tests do to one node
    def stop_app(self, i: int) -> None:
        """Stop node `i`'s RabbitMQ application (its VM stays up), as an operator would."""
        self._ctl(i, "stop_app")

    def start_app(self, i: int) -> None:
        self._ctl(i, "start_app")
        self.nodes[i].wait_ready()

    def kill(self, i: int) -> None:
        """SIGKILL node `i`'s Erlang VM: a crash, with no goodbye to clients or peers."""
        self.nodes[i].kill()

    def restart(self, i: int) -> None:
        """Boot a killed node again on its data: it rejoins the cluster by itself."""
        node = self.nodes[i]
        node.launch()
        node.wait_ready()

    def _ctl(self, i: int, *args: str) -> None:
        out = self.nodes[i].ctl(*args, timeout=120)
        if out.returncode != 0:
            raise LocalStackError(f"rabbitmqctl {' '.join(args)} on "
                                  f"{self.nodes[i].nodename} failed: "
                                  f"{(out.stderr or out.stdout).strip()[:300]}")


def stop_nodes(nodes: list[RabbitMQServer]) -> None:
    """Stop the nodes of a cluster side by side (one by one, each takes seconds); a restart
    boots them side by side too, so none waits for a peer that stopped later."""
    stoppers = [threading.Thread(target=node.stop) for node in nodes]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
