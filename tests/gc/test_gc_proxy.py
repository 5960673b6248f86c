"""`fnrelay gc-proxy`: plain HTTP on loopback in, TLS to a real broker out, bodies streamed both
ways, statuses and headers passed through, and clear errors for what a user gets wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fnrelay import Client
from fnrelay.devstack.processes import executable, free_port, spawn, stop_pid, tail
from fnrelay.devstack.rabbitmq import make_shared_tmpdir
from fnrelay.gcproxy import check_upstream, forward_headers
from support.gc_proxy import gc_proxy
from support.pki import make_ca_and_server_cert
from support.waiting import wait_for


@pytest.fixture(scope="module")
def pki() -> Iterator[dict[str, Path]]:
    d = make_shared_tmpdir("fnrelay-gcproxy-pki-")
    yield make_ca_and_server_cert(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def https_broker(pki, rabbitmq, new_vhost) -> Iterator[dict[str, str]]:
    """`fnrelay-broker serve` over HTTPS with the test CA's certificate, and a user's token."""
    d = make_shared_tmpdir("fnrelay-gcproxy-broker-")
    port, db = free_port(), f"sqlite:///{d / 'broker.db'}"
    env = {**os.environ, "FNRELAY_HOME": str(d), "FNRELAY_AMQP_URL": new_vhost("gcproxy")}
    proc = spawn([executable("fnrelay-broker"), "serve", "--db", db, "--host", "127.0.0.1",
                  "--port", str(port), "--ssl-certfile", str(pki["cert"]),
                  "--ssl-keyfile", str(pki["key"])], d / "broker.log", env)
    url = f"https://localhost:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{url}/v1/version", verify=str(pki["ca"]), timeout=5).ok
        except requests.RequestException:
            return proc.poll() is not None

    try:
        wait_for(answers, "the HTTPS broker")
        assert proc.poll() is None, tail(d / "broker.log")
        out = subprocess.run([executable("fnrelay-broker"), "user", "add", "proxy-user",
                              "--db", db], capture_output=True, text=True, check=True, env=env)
        yield {"url": url, "token": out.stdout.strip().splitlines()[-1]}
    finally:
        stop_pid(proc.pid)
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def proxy(https_broker, pki, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("gcproxy") / "proxy.log"
    with gc_proxy(https_broker["url"], port, log, ca_bundle=str(pki["ca"])):
        yield f"http://127.0.0.1:{port}"


def test_sdk_calls_reach_the_tls_broker_through_the_proxy(proxy, https_broker, pki):
    client = Client(proxy, https_broker["token"])  # plain HTTP to the proxy, no CA needed
    assert client.whoami()["username"] == "proxy-user"
    assert requests.get(f"{proxy}/v1/version", timeout=10).json() == \
        requests.get(f"{https_broker['url']}/v1/version", verify=str(pki["ca"]), timeout=10).json()


def test_large_bodies_stream_both_ways(proxy, https_broker, pki):
    """A registration of ~1 MB goes up; an answer of many 64 KiB chunks comes back whole."""
    blob = "x" * 1_000_000

    def big() -> int:
        return len(blob)

    client = Client(proxy, https_broker["token"])
    function_id = client.register_function(big, description="d" * 500_000)
    via = client.get_function(function_id)
    assert via["function_name"] == "big" and len(via["description"]) == 500_000
    direct = requests.get(f"{https_broker['url']}/v1/functions/{function_id}",
                          verify=str(pki["ca"]), timeout=30,
                          headers={"Authorization": f"Bearer {https_broker['token']}"})
    assert via == direct.json()


def test_a_chunked_request_body_is_forwarded(proxy, https_broker):
    """A body without Content-Length (Transfer-Encoding: chunked) arrives whole."""
    def parts() -> Iterator[bytes]:
        yield b'{"function": "01\\n'
        yield b'gAR9lC4=", "function_name": "chunked"}'

    r = requests.post(f"{proxy}/v1/functions", data=parts(), timeout=30, headers={
        "Authorization": f"Bearer {https_broker['token']}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    function_id = r.json()["function_id"]
    got = Client(proxy, https_broker["token"]).get_function(function_id)
    assert got["function_name"] == "chunked"


def test_errors_of_the_broker_pass_through_unchanged(proxy, https_broker, pki):
    """Status, body and content type as the broker sent them, for every method."""
    for method in ("GET", "DELETE", "PUT", "PATCH"):
        via = requests.request(method, f"{proxy}/v1/whoami?x=1", timeout=10,
                               headers={"Authorization": "Bearer not-a-token"})
        direct = requests.request(method, f"{https_broker['url']}/v1/whoami?x=1", timeout=10,
                                  verify=str(pki["ca"]),
                                  headers={"Authorization": "Bearer not-a-token"})
        assert (via.status_code, via.content) == (direct.status_code, direct.content)
        assert via.headers["content-type"] == direct.headers["content-type"]
    head = requests.head(f"{https_broker['url']}/v1/version", timeout=10, verify=str(pki["ca"]))
    assert requests.head(f"{proxy}/v1/version", timeout=10).status_code == head.status_code


def test_an_unknown_ca_is_a_clear_502(https_broker, tmp_path):
    port = free_port()
    env = {"FNRELAY_CA_BUNDLE": "", "SSL_CERT_FILE": "", "REQUESTS_CA_BUNDLE": ""}
    with gc_proxy(https_broker["url"], port, tmp_path / "proxy.log", env=env):
        r = requests.get(f"http://127.0.0.1:{port}/v2/version", timeout=30)
    assert r.status_code == 502
    assert "FNRELAY_CA_BUNDLE" in r.json()["message"]


def test_the_proxy_refuses_plain_http_to_another_host_and_a_busy_port(tmp_path):
    fnrelay = executable("fnrelay")
    out = subprocess.run([fnrelay, "gc-proxy", "--broker-url", "http://compute.example.org",
                          "--port", str(free_port())], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "over TLS only" in out.stderr, out.stderr
    port = free_port()
    with gc_proxy("https://localhost:1", port, tmp_path / "first.log"):
        out = subprocess.run([fnrelay, "gc-proxy", "--broker-url", "https://localhost:1",
                              "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr, out.stderr


def test_upstream_and_header_rules():
    assert check_upstream("https://broker.example.org/") == "https://broker.example.org"
    assert check_upstream("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert forward_headers([("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"),
                            ("Keep-Alive", "5"), ("Host", "localhost:5000"),
                            ("Transfer-Encoding", "chunked"), ("Authorization", "Bearer t"),
                            ("Content-Length", "3")]) == \
        [("Authorization", "Bearer t"), ("Content-Length", "3")]
