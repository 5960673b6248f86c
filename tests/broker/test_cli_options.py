"""`fnrelay-broker serve` refuses nonsense numbers at once, as a usage error naming the option,
instead of a traceback (a port out of range) or a broker that cannot work (no request fits,
every endpoint offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fnrelay.devstack.processes import free_port

BROKER_CLI = str(Path(sys.executable).parent / "fnrelay-broker")


@pytest.mark.parametrize("option, value", [
    ("--port", "-1"),
    ("--port", "70000"),
    ("--payload-limit", "0"),
    ("--payload-limit", "-1"),
    ("--heartbeat-period", "0"),
    ("--heartbeat-period", "-5"),
    ("--heartbeat-threshold", "-1"),
])
def test_serve_refuses_numbers_out_of_range(tmp_path: Path, option: str, value: str) -> None:
    # Without the check the broker would start (and run until the timeout) or crash.
    out = subprocess.run(
        [BROKER_CLI, "serve", "--db", f"sqlite:///{tmp_path / 'broker.db'}",
         "--amqp-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/", option, value],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"Invalid value for '{option}'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("option", ["--amqp-url", "--public-amqp-url"])
@pytest.mark.parametrize("url", [
    "rabbit.example.org",  # no scheme: was an IndexError traceback from pika
    "http://127.0.0.1:15672/",  # the management URL by mistake: was a broker retrying forever
    "amqp://fnrelay:Pw-0f-MQ@127.0.0.1:notaport/",  # was a ValueError traceback
])
def test_serve_refuses_a_malformed_rabbitmq_url(tmp_path: Path, option: str, url: str) -> None:
    out = subprocess.run(
        [BROKER_CLI, "serve", "--db", f"sqlite:///{tmp_path / 'broker.db'}", "--port",
         str(free_port()), option, url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"Invalid value for '{option}': not a RabbitMQ URL" in out.stderr
    assert "Traceback" not in out.stderr and "Pw-0f-MQ" not in out.stderr


def test_serve_takes_the_rabbitmq_url_from_a_file_or_a_flag_not_both(tmp_path: Path) -> None:
    url_file = tmp_path / "amqp-url"
    url_file.write_text("amqp://fnrelay:Pw-0f-MQ@127.0.0.1:5672/\n")
    url_file.chmod(0o600)
    both = subprocess.run(
        [BROKER_CLI, "serve", "--db", f"sqlite:///{tmp_path / 'broker.db'}",
         "--amqp-url-file", str(url_file), "--amqp-url", "amqp://x:y@127.0.0.1:5672/"],
        capture_output=True, text=True, timeout=60)
    assert both.returncode == 2, both.stderr
    assert "give --amqp-url-file or --amqp-url" in both.stderr
    assert "Pw-0f-MQ" not in both.stderr and "Traceback" not in both.stderr

    url_file.write_text("http://fnrelay:Pw-0f-MQ@127.0.0.1:15672/\n")
    bad = subprocess.run(
        [BROKER_CLI, "serve", "--db", f"sqlite:///{tmp_path / 'broker.db'}",
         "--amqp-url-file", str(url_file)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad.stderr
    assert "Invalid value for '--amqp-url-file': not a RabbitMQ URL" in bad.stderr
    assert "Pw-0f-MQ" not in bad.stderr


def test_a_password_on_the_command_line_is_warned_about_and_not_from_the_environment(
        tmp_path: Path) -> None:
    """`ps` shows every local user a command line, only its owner the environment."""
    url = f"postgresql://fnrelay:Pw-0f-DB@127.0.0.1:{free_port()}/fnrelay"
    flag = subprocess.run([BROKER_CLI, "user", "add", "someone", "--db", url],
                          capture_output=True, text=True, timeout=60)
    assert "warning: the password in --db is visible to every local user" in flag.stderr
    assert "FNRELAY_BROKER_DB" in flag.stderr and "Pw-0f-DB" not in flag.stderr
    env = subprocess.run([BROKER_CLI, "user", "add", "someone"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "FNRELAY_BROKER_DB": url})
    assert env.returncode == 1 and "warning" not in env.stderr, env.stderr
