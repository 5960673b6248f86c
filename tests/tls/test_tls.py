"""TLS with a self-signed CA made here: the broker over HTTPS, RabbitMQ over amqps, and the SDK
and endpoint trusting the CA through FNRELAY_CA_BUNDLE (and refusing without it)."""

from __future__ import annotations

import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from fnrelay import Client, Executor
from fnrelay.amqp import ENV_CA_BUNDLE, connection_parameters
from fnrelay.devstack.processes import executable, free_port, spawn
from fnrelay.devstack.rabbitmq import RabbitMQServer, make_shared_tmpdir
from fnrelay.devstack.services import LocalEndpoint
from fnrelay.errors import BrokerUnavailableError
from support.pki import make_ca_and_server_cert
from support.waiting import wait_for


@pytest.fixture(scope="module")
def pki() -> Iterator[dict[str, Path]]:
    d = make_shared_tmpdir("fnrelay-tls-")
    yield make_ca_and_server_cert(d)
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture(scope="module")
def tls_rabbitmq(pki) -> Iterator[RabbitMQServer]:
    """A RabbitMQ of this module with an amqps listener using the test certificate."""
    server = RabbitMQServer(make_shared_tmpdir("fnrelay-tls-rmq-") / "rabbitmq",
                            tls=(str(pki["cert"]), str(pki["key"]), str(pki["ca"]))).start()
    yield server
    server.stop()


def _own_vhost(tls_rabbitmq) -> str:  # type: ignore[no-untyped-def]
    """The amqps URL of a new vhost: a broker of another database is refused on one that a
    running broker holds."""
    import requests

    vhost, auth = f"tls-{uuid.uuid4().hex[:8]}", tls_rabbitmq.admin_auth
    api = tls_rabbitmq.management_url.rstrip("/") + "/api"
    requests.put(f"{api}/vhosts/{vhost}", auth=auth, timeout=10).raise_for_status()
    requests.put(f"{api}/permissions/{vhost}/{auth[0]}", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    return tls_rabbitmq.amqps_url.rsplit("/", 1)[0] + "/" + vhost


def _start_https_broker(pki, tls_rabbitmq, amqps_url=None):  # type: ignore[no-untyped-def]
    """`fnrelay-broker serve --ssl-certfile/--ssl-keyfile`, reaching RabbitMQ over amqps:
    (process, URL, its directory, its database URL), answering."""
    d = make_shared_tmpdir("fnrelay-tls-broker-")
    port = free_port()
    db = f"sqlite:///{d / 'broker.db'}"
    proc = spawn([executable("fnrelay-broker"), "serve", "--db", db,
                  "--amqp-url", amqps_url or tls_rabbitmq.amqps_url,
                  "--host", "127.0.0.1", "--port", str(port), "--ssl-certfile", str(pki["cert"]),
                  "--ssl-keyfile", str(pki["key"]),
                  "--amqp-management-url", tls_rabbitmq.management_url], d / "broker.log",
                 {"FNRELAY_HOME": str(d), ENV_CA_BUNDLE: str(pki["ca"])})
    url = f"https://localhost:{port}"
    wait_for(lambda: _answers(url, pki["ca"]) or proc.poll() is not None, "the HTTPS broker")
    assert proc.poll() is None, (d / "broker.log").read_text()[-2000:]
    return proc, url, d, db


@pytest.fixture(scope="module")
def https_broker(pki, tls_rabbitmq, ca_env) -> Iterator[dict[str, str]]:
    proc, url, d, db = _start_https_broker(pki, tls_rabbitmq)
    bin_ = executable("fnrelay-broker")
    try:
        out = subprocess.run([bin_, "user", "add", "tls-user", "--db", db],
                             capture_output=True, text=True, check=True)
        yield {"url": url, "token": out.stdout.strip().splitlines()[-1], "log": str(d)}
    finally:
        proc.terminate()
        proc.wait(30)


def _answers(url: str, ca: Path) -> bool:
    import requests

    try:
        return requests.get(f"{url}/v1/version", verify=str(ca), timeout=5).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def ca_env(pki) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_CA_BUNDLE, str(pki["ca"]))
    yield str(pki["ca"])
    mp.undo()


def test_sdk_talks_https_with_the_ca_configured(https_broker):
    client = Client(https_broker["url"], https_broker["token"])
    assert client.whoami()["username"] == "tls-user"
    group = client.create_task_group()
    assert group["amqp_url"].startswith("amqps://")


def test_sdk_refuses_an_unknown_ca_with_a_clear_error(https_broker, monkeypatch):
    monkeypatch.delenv(ENV_CA_BUNDLE)
    with pytest.raises(BrokerUnavailableError, match=f"TLS certificate.*{ENV_CA_BUNDLE}"):
        Client(https_broker["url"], https_broker["token"]).whoami()


def test_amqps_verifies_with_the_ca(tls_rabbitmq, ca_env):
    conn = pika.BlockingConnection(connection_parameters(tls_rabbitmq.amqps_url))
    assert conn.is_open
    conn.close()


def test_amqps_refuses_an_unknown_ca(tls_rabbitmq, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_CA_BUNDLE, str(make_ca_and_server_cert(tmp_path)["ca"]))  # not it
    params = connection_parameters(tls_rabbitmq.amqps_url)
    params.connection_attempts = 1
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)) as e:
        pika.BlockingConnection(params)
    assert "CERTIFICATE_VERIFY_FAILED" in repr(e.value)


def double(x: int) -> int:
    return 2 * x


def _connections_of(rabbitmq: RabbitMQServer, user: str) -> list[dict]:
    import requests

    r = requests.get(f"{rabbitmq.management_url}/api/connections", auth=rabbitmq.admin_auth,
                     timeout=10)
    r.raise_for_status()
    return [c for c in r.json() if c.get("user") == user]


def test_endpoint_runs_a_function_over_amqps_and_https(https_broker, tls_rabbitmq, ca_env):
    """A real `fnrelay-endpoint` with only FNRELAY_CA_BUNDLE to trust the CA: it registers over
    HTTPS, consumes its tasks and publishes the result over amqps with its own account, and the
    Executor streams the result back over amqps."""
    home = make_shared_tmpdir("fnrelay-tls-ep-")
    ep = LocalEndpoint(home, "tls-ep", https_broker["url"], https_broker["token"],
                       marker=str(home)).configure(max_workers=1)
    client = Client(https_broker["url"], https_broker["token"])
    try:
        ep.start(foreground=True)
        with Executor(ep.endpoint_id, client=client) as ex:
            assert ex.submit(double, 21).result(timeout=60) == 42
            assert ex.amqp_connected  # streamed (the broker hands out amqps URLs only)
        conns = wait_for(lambda: _connections_of(tls_rabbitmq, f"fnrelay-ep-{ep.endpoint_id}"),
                         "the endpoint's connection in the management API")
        assert all(c["ssl"] for c in conns), conns
    finally:
        # An idle keep-alive TLS connection would hold up the broker's shutdown (it waits for
        # the client's close_notify) until the fixture's stop times out.
        client.transport.close()
        ep.stop()
        subprocess.run(["rm", "-rf", str(home)], check=False)


def test_https_broker_stops_despite_an_idle_keep_alive_client(pki, tls_rabbitmq):
    """A client that keeps its TLS connection open (never sends close_notify) must not hold
    the broker's SIGTERM stop: the broker's graceful shutdown is bounded."""
    import requests

    proc, url, d, _ = _start_https_broker(pki, tls_rabbitmq, _own_vhost(tls_rabbitmq))
    session = requests.Session()
    try:
        assert session.get(f"{url}/v1/version", verify=str(pki["ca"]), timeout=5).ok
        proc.terminate()
        try:
            # Unbounded, uvicorn waits ~30 s for such a client; the broker's grace is 5 s.
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the broker did not stop within 20 s of SIGTERM") from None
        assert code == 0, (d / "broker.log").read_text()[-2000:]
    finally:
        session.close()
        if proc.poll() is None:
            proc.kill()
