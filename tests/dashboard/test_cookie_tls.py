"""Over HTTPS the dashboard's session cookie is also Secure: a broker served with
--ssl-certfile (plain AMQP behind it: only the browser's side matters here), or behind a TLS
load balancer it believes (--forwarded-allow-ips)."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fnrelay.devstack.processes import free_port
from support.broker_fixtures import start_broker  # noqa: F401
from support.pki import make_ca_and_server_cert
from support.waiting import wait_for

BROKER = str(Path(sys.executable).parent / "fnrelay-broker")


@pytest.fixture
def https_broker(tmp_path: Path, new_vhost) -> Iterator[tuple[str, Path, str]]:
    """(URL, CA file, a user's token) of an HTTPS broker."""
    pki = make_ca_and_server_cert(tmp_path)
    db, port = f"sqlite:///{tmp_path / 'broker.db'}", free_port()
    proc = subprocess.Popen(
        [BROKER, "serve", "--db", db, "--amqp-url", new_vhost("fnrelay-dash-tls"),
         "--host", "127.0.0.1", "--port", str(port), "--ssl-certfile", str(pki["cert"]),
         "--ssl-keyfile", str(pki["key"])],
        stdout=(tmp_path / "broker.log").open("w"), stderr=subprocess.STDOUT,
        env=dict(os.environ, FNRELAY_HOME=str(tmp_path)))
    url = f"https://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "broker.log").read_text()
        try:
            return requests.get(f"{url}/v1/version", verify=pki["ca"], timeout=1).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, "the HTTPS broker")
        out = subprocess.run([BROKER, "user", "add", "tls-user", "--db", db],
                             capture_output=True, text=True, check=True)
        yield url, pki["ca"], out.stdout.strip().splitlines()[-1]
    finally:
        proc.terminate()
        proc.wait(20)


def test_session_cookie_is_secure_httponly_and_strict_over_https(https_broker) -> None:
    url, ca, token = https_broker
    r = requests.post(f"{url}/dashboard/login", data={"token": token}, verify=ca,
                      allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/dashboard"} <= flags, cookie
    assert token not in cookie


#: The load balancer's address: any loopback address but 127.0.0.1, which uvicorn (and the
#: broker) believe by default, so a Secure cookie proves the option was applied.
BALANCER = "127.0.0.2"


def _login_from(url: str, source: str, token: str) -> tuple[int, set[str]]:
    """POST the dashboard login from the local address `source`, saying the browser's side
    was HTTPS: (status, the session cookie's flags)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request("POST", "/dashboard/login", body=urllib.parse.urlencode({"token": token}),
                     headers={"Content-Type": "application/x-www-form-urlencoded",
                              "X-Forwarded-Proto": "https"})
        r = conn.getresponse()
        cookie = r.getheader("set-cookie") or ""
        return r.status, {part.strip().lower() for part in cookie.split(";")[1:]}
    finally:
        conn.close()


@pytest.mark.parametrize(("option", "secure"), [
    (["--forwarded-allow-ips", BALANCER], True),
    (["--forwarded-allow-ips", "10.9.9.9"], False),
    ([], False),  # the default believes 127.0.0.1 only
])
def test_behind_a_tls_load_balancer_the_cookie_is_secure_if_the_balancer_is_believed(
        start_broker, new_vhost, option: list[str], secure: bool) -> None:  # noqa: F811
    """A load balancer ends TLS and says so in X-Forwarded-Proto: a broker that believes it
    (--forwarded-allow-ips) marks the cookie Secure; a peer it does not believe cannot fake
    it. The request comes from BALANCER, which nothing but the option makes believed."""
    broker = start_broker(new_vhost("fnrelay-dash-lb"), None, *option)
    status, flags = _login_from(broker.url, BALANCER, broker.add_user())
    assert status == 303
    assert ("secure" in flags) is secure, flags
