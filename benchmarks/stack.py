"""The fnrelay stack under test: `fnrelay local up` in a temporary directory, torn down after.

The harness uses the same code users start (fnrelay.devstack.stack.LocalStack), with the
endpoint's worker count set to the benchmark's, and reads pids, URLs and the database path from
the stack's state so that the memory and profile probes know whom to watch.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnrelay.config import ENV_BROKER_URL, ENV_ENDPOINT_ID, ENV_HOME, ENV_TOKEN
from fnrelay.devstack.rabbitmq import RabbitMQServer, make_shared_tmpdir
from fnrelay.devstack.services import LocalEndpoint
from fnrelay.devstack.stack import LocalStack


@dataclass
class Stack:
    """What the benchmarks need to know about a running stack."""

    dir: Path
    broker_url: str
    token: str
    endpoint_id: str
    amqp_url: str  # RabbitMQ administrator URL, for the raw AMQP round trip
    broker_pid: int
    endpoint: LocalEndpoint
    db_path: Path | None

    @property
    def endpoint_pid(self) -> int:
        pid = self.endpoint.pid
        if pid is None:
            raise RuntimeError("the endpoint is not running")
        return pid

    def client(self) -> Any:
        from fnrelay import Client

        return Client(self.broker_url, self.token)


def _sqlite_path(db_url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(db_url[len(prefix):]) if db_url.startswith(prefix) else None


def _set_workers(endpoint: LocalEndpoint, workers: int) -> None:
    """Restart the endpoint with `workers` local workers unless it already has them."""
    import yaml

    config = yaml.safe_load(endpoint.config_path.read_text()) or {}
    if int((config.get("engine") or {}).get("max_workers", -1)) == workers:
        return
    endpoint.stop()
    endpoint.configure(max_workers=workers)
    endpoint.start()


@contextmanager
def local_stack(workers: int, log: Any = None) -> Iterator[Stack]:
    """A fresh local stack whose endpoint has `workers` workers; always taken down again."""
    base = make_shared_tmpdir("fnrelay-bench-")
    local = LocalStack(base / "stack", log=log or (lambda _: None))
    try:
        state = local.up()
        ex = state["exports"]
        endpoint = LocalEndpoint(ex[ENV_HOME], LocalStack.ENDPOINT, ex[ENV_BROKER_URL],
                                 ex[ENV_TOKEN], marker=state["marker"], log=local.log)
        _set_workers(endpoint, workers)
        yield Stack(
            dir=local.dir, broker_url=ex[ENV_BROKER_URL], token=ex[ENV_TOKEN],
            endpoint_id=ex[ENV_ENDPOINT_ID],
            amqp_url=RabbitMQServer.from_dict(state["rabbitmq"]).amqp_url,
            broker_pid=state["broker"]["pid"], endpoint=endpoint,
            db_path=_sqlite_path(state["broker"]["db_url"]))
    finally:
        try:
            local.down()
        finally:
            shutil.rmtree(base, ignore_errors=True)
