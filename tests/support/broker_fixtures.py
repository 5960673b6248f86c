"""Broker fixtures, shared by tests/broker and tests/security: real RabbitMQ, real
`fnrelay-broker serve` processes.

The RabbitMQ URL comes from the one fixture `amqp_url`. Against a shared RabbitMQ it makes a
private virtual host (through the management API) so that concurrent brokers never consume
each other's results queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
import requests

from fnrelay.devstack.processes import free_port
from support.waiting import wait_for

BIN = Path(sys.executable).parent
BROKER_CLI = str(BIN / "fnrelay-broker")




@pytest.fixture(scope="session")
def amqp_url(new_vhost) -> str:
    """A private virtual host: these tests start brokers of their own."""
    return new_vhost("fnrelay-broker-test")


@dataclass
class BrokerProcess:
    url: str
    db_url: str
    proc: subprocess.Popen
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run `fnrelay-broker ARGS --db <this broker's db>`."""
        return subprocess.run([BROKER_CLI, *args, "--db", self.db_url],
                              capture_output=True, text=True)

    def add_user(self, name: str | None = None) -> str:
        """Create a user with the CLI; returns its token (the CLI's last line)."""
        out = self.cli("user", "add", name or f"user-{uuid.uuid4().hex[:8]}")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    @property
    def names(self):  # type: ignore[no-untyped-def]
        """The broker's queue names (their key is in its database): what only the party
        reading a queue is told, which tests read here instead."""
        from fnrelay_broker import queues
        from fnrelay_broker.db import Database

        db = Database(self.db_url)
        try:
            return queues.load(db)
        finally:
            db.dispose()

    def api(self, token: str | None = None) -> Api:
        return Api(self.url, token or self.add_user())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_broker(tmp_path_factory) -> Iterator[Callable[..., BrokerProcess]]:
    """Start `fnrelay-broker serve` processes; all are stopped at the end of the session."""
    started: list[BrokerProcess] = []

    def start(amqp: str, db_url: str | None = None, *extra: str) -> BrokerProcess:
        home = tmp_path_factory.mktemp("broker")
        db_url = db_url or f"sqlite:///{home / 'broker.db'}"
        port = free_port()
        log = home / "broker.log"
        env = dict(os.environ, FNRELAY_HOME=str(home))
        proc = subprocess.Popen(
            [BROKER_CLI, "serve", "--db", db_url, "--amqp-url", amqp, "--port", str(port),
             *extra],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
        )
        broker = BrokerProcess(f"http://127.0.0.1:{port}", db_url, proc, log)
        started.append(broker)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"broker exited: {log.read_text()}")
            try:
                return requests.get(f"{broker.url}/v1/version", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_for(up, "the broker to answer")
        return broker

    yield start
    for b in started:
        b.stop()


@pytest.fixture(scope="session")
def broker(start_broker, amqp_url) -> BrokerProcess:
    return start_broker(amqp_url, None, "--payload-limit", str(1024 * 1024))


class Api:
    """Raw HTTP against the broker, as one user."""

    def __init__(self, base: str, token: str):
        self.base = base.rstrip("/") + "/v1"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, self.base + path, timeout=30, **kw)

    def ok(self, method: str, path: str, **kw) -> dict:
        r = self(method, path, **kw)
        assert r.status_code == 200, r.text
        return r.json()

    def function(self, body: str | None = None) -> str:
        body = body or f"01\nfn-{uuid.uuid4()}"
        return self.ok("POST", "/functions", json={"function": body, "function_name": "f"})[
            "function_id"
        ]

    def endpoint(self, metadata: dict | None = None) -> str:
        """A new endpoint of this user (the broker picks its id)."""
        return self.register(metadata)["endpoint_id"]

    def register(self, metadata: dict | None = None) -> dict:
        """POST /v1/endpoints: the new endpoint's registration answer."""
        return self.ok("POST", "/endpoints", json={"name": "ep", "metadata": metadata or {}})

    def submit(self, endpoint_id: str, function_id: str, n: int = 1, group: str | None = None,
               key: str | None = None) -> dict:
        body = {
            "endpoint_id": endpoint_id,
            "task_group_id": group,
            "tasks": [{"function_id": function_id, "payload": f"03\n[{i}]"} for i in range(n)],
        }
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        return self.ok("POST", "/submit", json=body, headers=headers)


@pytest.fixture
def api(broker) -> Api:
    return broker.api()


@pytest.fixture
def other_api(broker) -> Api:
    return broker.api()


@pytest.fixture
def amqp(amqp_url) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A raw pika channel acting as a fake endpoint / result reader."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    yield ch
    conn.close()


@dataclass
class TaskStore:
    """The broker's task store called directly, on a real SQLite database with one user,
    one registered endpoint and one function."""

    db: Any
    user: Any
    endpoint_id: str
    function_id: str

    def submit(self, handoff: Callable[[Any], None] | None = None) -> str:
        """Submit one task (through `handoff` after the commit, if given); its id."""
        from fnrelay_broker import tasks

        answer = tasks.submit(self.db, self.user, str(uuid.uuid4()), self.endpoint_id, None,
                              [{"function_id": self.function_id, "payload": "03\n1"}],
                              handoff=handoff)
        return answer["task_ids"][0]

    def history(self, task_id: str) -> list[tuple[str, float]]:
        """(status, time) of each step of the task, in order."""
        from fnrelay_broker import tasks

        rec = tasks.task_record(self.db, self.user, task_id)
        return [(h["status"], h["time"]) for h in rec["history"]]


@pytest.fixture
def task_store(tmp_path) -> TaskStore:  # type: ignore[no-untyped-def]
    return make_task_store(f"sqlite:///{tmp_path / 'broker.db'}")


def make_task_store(db_url: str) -> TaskStore:
    """A migrated database at `db_url` with a user, an endpoint and a function."""
    from fnrelay_broker import registry
    from fnrelay_broker.auth import CurrentUser, create_user
    from fnrelay_broker.db import Database

    db = Database(db_url)
    db.migrate()
    uid, _ = create_user(db, "alice")
    user = CurrentUser(id=uid, username="alice")
    endpoint_id = registry.create_endpoint(db, user, "ep", {})
    function_id = registry.register_function(db, user, "04\nbody", "f", None)
    return TaskStore(db, user, endpoint_id, function_id)
