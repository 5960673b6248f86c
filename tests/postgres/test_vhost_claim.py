"""One RabbitMQ vhost per deployment: a broker of another database is refused at start, with a
one-line reason, while replicas of one database share the vhost (issue 24)."""

from __future__ import annotations

import subprocess

from fnrelay.devstack.processes import free_port
from support.broker_fixtures import BROKER_CLI


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
