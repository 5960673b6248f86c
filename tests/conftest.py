"""Session fixtures: a real RabbitMQ, a real broker and real endpoints, started with the same code
as `fnrelay local up` (fnrelay.devstack).

Set FNRELAY_TEST_AMQP_URL (and FNRELAY_TEST_AMQP_MGMT for its management API) to use a
RabbitMQ that already runs instead of starting one: a shortcut for development.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fnrelay.devstack.processes import reap_marked
from fnrelay.devstack.rabbitmq import RabbitMQServer, make_shared_tmpdir
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from support.session import MARKER, discard_node
from support.vhosts import add_vhost, delete_vhost, on_vhost

#: Session fixtures of the test-only servers, for any test that asks for them, and how the
#: suite is split across pytest-xdist workers.
pytest_plugins = ["support.slurm_fixtures", "support.cluster_fixtures", "support.workers",
                  "support.leftover_watchers"]



@dataclass
class ExternalRabbitMQ:
    """A RabbitMQ the test run did not start (FNRELAY_TEST_AMQP_URL)."""

    amqp_url: str
    management_url: str

    @property
    def admin_auth(self) -> tuple[str, str]:
        parts = urlsplit(self.amqp_url)
        return (parts.username or "guest", parts.password or "guest")


@pytest.fixture(scope="session")
def _workdir() -> Iterator[Path]:
    """A /tmp directory the rabbitmq user can enter (pytest's own are 0700)."""
    path = make_shared_tmpdir("fnrelay-test-")
    yield path
    reap_marked(MARKER)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbitmq(_workdir: Path) -> Iterator[RabbitMQServer | ExternalRabbitMQ]:
    """A RabbitMQ node of this test session: .amqp_url (administrator), .management_url,
    .admin_auth."""
    external = os.environ.get("FNRELAY_TEST_AMQP_URL")
    if external:
        yield ExternalRabbitMQ(external, os.environ.get("FNRELAY_TEST_AMQP_MGMT",
                                                        "http://127.0.0.1:15672"))
        return
    server = RabbitMQServer(_workdir / "rabbitmq", marker=MARKER).start()
    yield server
    discard_node(server)


@pytest.fixture(scope="session")
def amqp_url(rabbitmq) -> str:
    """The administrator's AMQP URL of the session's RabbitMQ (default virtual host)."""
    return rabbitmq.amqp_url


@pytest.fixture(scope="session")
def new_vhost(rabbitmq) -> Iterator[Callable[[str], str]]:
    """Factory: new_vhost(prefix) -> the admin's AMQP URL on a fresh virtual host of the
    session's RabbitMQ. Tests that start brokers of their own use one each, so their brokers
    never consume the session broker's results queue (or each other's). Removed at the end."""
    mgmt, auth = rabbitmq.management_url, rabbitmq.admin_auth
    made: list[str] = []

    def make(prefix: str = "fnrelay-test") -> str:
        made.append(add_vhost(mgmt, auth, prefix))
        return on_vhost(rabbitmq.amqp_url, made[-1])

    yield make
    for vhost in made:
        delete_vhost(mgmt, auth, vhost)


@pytest.fixture(scope="session")
def broker(rabbitmq, _workdir: Path) -> Iterator[BrokerServer]:
    """`fnrelay-broker serve` on the session's RabbitMQ with a temporary SQLite database and
    short heartbeats. Has .url, .db_url, .amqp_url, .add_user(name) -> token."""
    server = BrokerServer(_workdir / "broker", rabbitmq.amqp_url, marker=MARKER,
                          management_url=rabbitmq.management_url,
                          extra_args=["--heartbeat-period", "1", "--heartbeat-threshold", "4"])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker_url(broker: BrokerServer) -> str:
    return broker.url


@pytest.fixture(scope="session")
def alice_token(broker: BrokerServer) -> str:
    return broker.add_user("alice")


@pytest.fixture(scope="session")
def bob_token(broker: BrokerServer) -> str:
    return broker.add_user("bob")


@pytest.fixture
def client(broker_url: str, alice_token: str):
    from fnrelay import Client

    return Client(broker_url, alice_token)


@pytest.fixture
def other_client(broker_url: str, bob_token: str):
    from fnrelay import Client

    return Client(broker_url, bob_token)


def _endpoint(workdir: Path, broker_url: str, token: str, name: str,
              **overrides: Any) -> LocalEndpoint:
    home = workdir / "endpoints" / f"{name}-{uuid.uuid4().hex[:6]}"
    return LocalEndpoint(home, name, broker_url, token, marker=MARKER).configure(**overrides)


@pytest.fixture(scope="session")
def session_endpoint(_workdir: Path, broker_url: str, alice_token: str
                     ) -> Iterator[LocalEndpoint]:
    """Alice's endpoint for the whole session (4 workers), started with `fnrelay-endpoint`."""
    ep = _endpoint(_workdir, broker_url, alice_token, "session", max_workers=4)
    ep.start(foreground=True)
    yield ep
    ep.stop()


@pytest.fixture(scope="session")
def endpoint_id(session_endpoint: LocalEndpoint) -> str:
    return session_endpoint.endpoint_id


@pytest.fixture
def make_endpoint(_workdir: Path, broker_url: str, alice_token: str
                  ) -> Iterator[Callable[..., LocalEndpoint]]:
    """make_endpoint(name, **config_overrides) -> a started endpoint of alice's, with
    .endpoint_id, .home, .start(), .stop(), .kill(). Stopped at teardown."""
    made: list[LocalEndpoint] = []

    def make(name: str, start: bool = True, **overrides: Any) -> LocalEndpoint:
        overrides.setdefault("max_workers", 2)
        ep = _endpoint(_workdir, broker_url, alice_token, name, **overrides)
        made.append(ep)
        if start:
            ep.start(foreground=True)
        return ep

    yield make
    for ep in made:
        ep.stop()
