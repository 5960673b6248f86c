"""Fixtures for endpoint tests: a real RabbitMQ vhost, a real broker process, the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fnrelay.devstack.processes import free_port
from support.waiting import wait_for

BIN = Path(sys.executable).parent
ENDPOINT_CLI = str(BIN / "fnrelay-endpoint")
BROKER_CLI = str(BIN / "fnrelay-broker")
WAIT = 60.0  # upper bound for something to happen, not a timing assertion




@pytest.fixture(scope="session")
def amqp_vhost_url(new_vhost) -> str:
    """A private virtual host: these tests start a broker of their own."""
    return new_vhost("fnrelay-ep-test")


@dataclass
class Broker:
    url: str
    token: str


@pytest.fixture(scope="session")
def broker(tmp_path_factory, amqp_vhost_url: str) -> Iterator[Broker]:
    """A real `fnrelay-broker serve` with one user; heartbeats every second."""
    home = tmp_path_factory.mktemp("broker")
    db = f"sqlite:///{home / 'broker.db'}"
    env = dict(os.environ, FNRELAY_HOME=str(home))
    out = subprocess.run([BROKER_CLI, "user", "add", "alice", "--db", db], env=env,
                         capture_output=True, text=True, check=True)
    token = out.stdout.strip().splitlines()[-1]
    port = free_port()
    log = home / "broker.log"
    proc = subprocess.Popen(
        [BROKER_CLI, "serve", "--db", db, "--amqp-url", amqp_vhost_url, "--port", str(port),
         "--heartbeat-period", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"broker exited: {log.read_text()}")
        try:
            return requests.get(f"{url}/v1/version", timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_for(up, "the broker to answer")
    yield Broker(url, token)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


class Cli:
    """Runs `fnrelay-endpoint` with its own FNRELAY_HOME; stops what it started."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env
        self.started: set[str] = set()

    def __call__(self, *args: str, check: bool = True,
                 stdin: str | None = None) -> subprocess.CompletedProcess:
        if args[:1] == ("start",):
            self.started.add(args[1])
        out = subprocess.run([ENDPOINT_CLI, *args], env=self.env, capture_output=True,
                             text=True, timeout=120, input=stdin,
                             stdin=None if stdin is not None else subprocess.DEVNULL)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    def endpoint_id(self, name: str) -> str:
        import json

        return json.loads((self.home / "endpoints" / name / "endpoint.json").read_text())[
            "endpoint_id"]

    def pid(self, name: str) -> int:
        return int((self.home / "endpoints" / name / "endpoint.pid").read_text())

    def cleanup(self) -> None:
        for name in self.started:
            if (self.home / "endpoints" / name).exists():
                self("stop", name, check=False)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The CLI without a broker (no token, no broker URL in the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    env["FNRELAY_HOME"] = str(tmp_path / "home")
    c = Cli(tmp_path / "home", env)
    yield c
    c.cleanup()


@pytest.fixture
def broker_cli(cli: Cli, broker: Broker) -> Cli:
    """The CLI with FNRELAY_BROKER_URL and FNRELAY_TOKEN of the test broker."""
    cli.env.update(FNRELAY_BROKER_URL=broker.url, FNRELAY_TOKEN=broker.token)
    return cli
