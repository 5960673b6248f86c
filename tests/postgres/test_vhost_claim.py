"""One RabbitMQ vhost per deployment: a broker of another database is refused at start, with a
one-line reason, while replicas of one database share the vhost (issue 24); a broker keeps its
claim while it runs, and stops when another deployment took the vhost while it had none."""

from __future__ import annotations

import subprocess
from urllib.parse import quote

import pika
import pika.exceptions
import requests

from fnrelay.devstack.processes import free_port
from fnrelay_broker.vhost import ARGUMENT, CLAIM_EXCHANGE, CONNECTION_NAME, vhost_of
from support.broker_fixtures import BROKER_CLI
from support.waiting import wait_for


def serve(amqp_url: str, db_url: str) -> subprocess.CompletedProcess:
    """`fnrelay-broker serve` that is expected to stop by itself."""
    return subprocess.run([BROKER_CLI, "serve", "--db", db_url, "--amqp-url", amqp_url,
                           "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60)


def test_a_broker_of_another_database_is_refused_while_replicas_share_the_vhost(
        start_broker, new_vhost, postgres, tmp_path):
    vhost = new_vhost("fnrelay-claim-test")
    first = start_broker(vhost, postgres.create_database())
    replica = start_broker(vhost, first.db_url)  # the same deployment: welcome
    assert replica.api().ok("GET", "/whoami")

    other = serve(vhost, f"sqlite:///{tmp_path / 'other.db'}")
    assert other.returncode == 1, other.stderr
    assert other.stderr.strip().splitlines()[-1].startswith(
        f"error: RabbitMQ vhost '{vhost.rsplit('/', 1)[1]}' is in use by a running broker of "
        "another deployment (another database)")
    assert "docs/deployment.md" in other.stderr and "Traceback" not in other.stderr

    # Once no broker of the first deployment runs, the vhost is free for another.
    assert first.stop() == 0 and replica.stop() == 0
    start_broker(vhost, f"sqlite:///{tmp_path / 'other.db'}")


# --- the claim is kept while the broker runs ---------------------------------------------------
def _claim_connections(rabbitmq, vhost_url: str) -> list[str]:
    """Names (RabbitMQ's keys) of the vhost's claim connections, through the management API."""
    vhost = vhost_of(vhost_url)
    r = requests.get(f"{rabbitmq.management_url.rstrip('/')}/api/vhosts/{quote(vhost, safe='')}"
                     "/connections", auth=rabbitmq.admin_auth, timeout=10)
    r.raise_for_status()
    return [c["name"] for c in r.json()
            if (c.get("client_properties") or {}).get("connection_name") == CONNECTION_NAME]


def _close(rabbitmq, name: str) -> None:
    requests.delete(f"{rabbitmq.management_url.rstrip('/')}/api/connections/{quote(name, safe='')}",
                    auth=rabbitmq.admin_auth, timeout=10).raise_for_status()


def test_a_lost_claim_is_taken_again_and_still_refuses_another_deployment(
        start_broker, new_vhost, rabbitmq, tmp_path):
    vhost = new_vhost("fnrelay-claim-kept")
    broker = start_broker(vhost, f"sqlite:///{tmp_path / 'a.db'}")
    first = wait_for(lambda: _claim_connections(rabbitmq, vhost), "the broker's claim")
    _close(rabbitmq, first[0])  # as a RabbitMQ restart would end it
    wait_for(lambda: (now := _claim_connections(rabbitmq, vhost)) and now != first,
             "the claim to be taken again", timeout=30)
    assert broker.proc.poll() is None
    other = serve(vhost, f"sqlite:///{tmp_path / 'other.db'}")
    assert other.returncode == 1 and "in use by a running broker" in other.stderr


def test_a_broker_whose_vhost_was_taken_while_its_claim_was_lost_stops(
        start_broker, new_vhost, rabbitmq, tmp_path):
    vhost = new_vhost("fnrelay-claim-lost")
    broker = start_broker(vhost, f"sqlite:///{tmp_path / 'a.db'}")
    conn = pika.BlockingConnection(pika.URLParameters(vhost))
    try:
        # Another deployment's broker claims the vhost in the gap (what its start does).
        # Should this broker take its claim again first, the other is refused: try again.
        def other_claims() -> bool:
            names = _claim_connections(rabbitmq, vhost)
            if names:
                _close(rabbitmq, names[0])
            ch = conn.channel()
            try:
                ch.exchange_declare(CLAIM_EXCHANGE, "fanout", auto_delete=True,
                                    arguments={ARGUMENT: "another-deployment"})
            except pika.exceptions.ChannelClosedByBroker:
                return False
            queue = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(queue, CLAIM_EXCHANGE)
            return True

        wait_for(other_claims, "the other deployment's claim", timeout=60)
        wait_for(lambda: broker.proc.poll() is not None, "the broker to stop", timeout=30)
    finally:
        conn.close()
    assert broker.proc.returncode == 1
    log = broker.log.read_text()
    assert "is in use by a running broker of another deployment" in log
    assert "Traceback" not in log
