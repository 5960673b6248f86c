"""`fnrelay-endpoint` without a broker: files it writes and errors users see."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
import yaml

from fnrelay_endpoint.config.model import EndpointConfig

ENDPOINT_CLI = str(Path(sys.executable).parent / "fnrelay-endpoint")


def test_configure_writes_config_and_leaves_the_id_to_the_broker(cli) -> None:  # type: ignore[no-untyped-def]
    """Without a token the broker cannot be asked for an id: none is made up here."""
    out = cli("configure", "ep1", "--broker-url", "http://127.0.0.1:9", "--max-workers", "3")
    assert "no id yet" in out.stdout
    d = cli.home / "endpoints" / "ep1"
    config = EndpointConfig.from_dict(yaml.safe_load((d / "config.yaml").read_text()))
    assert (config.broker_url, config.max_workers, config.prefetch) == (
        "http://127.0.0.1:9", 3, 512)
    assert not (d / "endpoint.json").exists()

    again = cli("configure", "ep1", "--broker-url", "http://127.0.0.1:9", check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    cli("configure", "ep1", "--broker-url", "http://127.0.0.1:10", "--force")
    listing = cli("list").stdout
    assert "ep1" in listing and "stopped" in listing


def test_configure_with_a_token_gets_a_lasting_id_from_the_broker(broker_cli, broker) -> None:  # type: ignore[no-untyped-def]
    cli = broker_cli
    out = cli("configure", "ep1", "--broker-url", broker.url, "--max-workers", "3")
    endpoint_id = cli.endpoint_id("ep1")
    assert uuid.UUID(endpoint_id) and endpoint_id in out.stdout
    d = cli.home / "endpoints" / "ep1"
    assert (d / "endpoint.json").stat().st_mode & 0o777 == 0o600
    r = requests.get(f"{broker.url}/v1/endpoints/{endpoint_id}/status", timeout=10,
                     headers={"Authorization": f"Bearer {broker.token}"})
    assert r.status_code == 200, r.text  # the broker made it, for this token's user

    again = cli("configure", "ep1", "--broker-url", broker.url, check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    cli("configure", "ep1", "--broker-url", broker.url, "--force")
    assert cli.endpoint_id("ep1") == endpoint_id  # the id outlives a rewrite

    listing = cli("list").stdout
    assert "ep1" in listing and endpoint_id in listing and "stopped" in listing


def test_unknown_endpoint_is_a_one_line_error(cli) -> None:  # type: ignore[no-untyped-def]
    for cmd in (["start", "nope"], ["stop", "nope"], ["status", "nope"],
                ["delete", "nope", "--yes"]):
        out = cli(*cmd, check=False)
        assert out.returncode == 1
        assert "no endpoint named 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_start_without_token_says_how_to_give_one(cli) -> None:  # type: ignore[no-untyped-def]
    cli("configure", "ep", "--broker-url", "http://127.0.0.1:9")
    out = cli("start", "ep", check=False)
    assert out.returncode == 1 and "no token" in out.stderr and "FNRELAY_TOKEN" in out.stderr


def test_configure_without_broker_url_fails(cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("configure", "ep", check=False)
    assert out.returncode == 1 and "--broker-url" in out.stderr


def test_bad_config_names_the_key(cli) -> None:  # type: ignore[no-untyped-def]
    cli("configure", "ep", "--broker-url", "http://127.0.0.1:9")
    path = cli.home / "endpoints" / "ep" / "config.yaml"
    path.write_text(path.read_text().replace("max_workers: ", "max_workers: -"))
    out = cli("start", "ep", check=False)
    assert out.returncode == 1 and "engine.max_workers" in out.stderr


def test_start_with_unreachable_broker_fails_with_log(cli) -> None:  # type: ignore[no-untyped-def]
    cli("configure", "ep", "--broker-url", "http://127.0.0.1:9")
    cli.env["FNRELAY_TOKEN"] = "some-token"
    # With no id yet, start asks the broker for one first: that fails at once.
    out = cli("start", "ep", check=False)
    assert out.returncode == 1 and "cannot reach the broker" in out.stderr
    assert "Traceback" not in out.stderr
    # An endpoint the broker made earlier starts, says at once that it cannot reach the
    # broker and retries, and at the end why it stopped: with this start's log lines only.
    identity = cli.home / "endpoints" / "ep" / "endpoint.json"
    identity.write_text(json.dumps({"endpoint_id": str(uuid.uuid4())}) + "\n")
    log = cli.home / "endpoints" / "ep" / "endpoint.log"
    log.write_text("2026-01-01 00:00:00,000 ERROR fnrelay_endpoint.daemon: an earlier run\n")
    begun = time.monotonic()
    proc = subprocess.Popen([ENDPOINT_CLI, "start", "ep"], env=cli.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert time.monotonic() - begun < 10, "silent until the endpoint gave up"
    assert "cannot reach the broker" in first and "retrying" in first, first
    stderr = first + proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "did not start" in stderr and "an earlier run" not in stderr, stderr
    assert "stopped" in cli("list").stdout


def test_yaml_syntax_errors_are_one_line_naming_the_place(cli) -> None:  # type: ignore[no-untyped-def]
    cli("configure", "ep", "--broker-url", "http://127.0.0.1:9")
    config = cli.home / "endpoints" / "ep" / "config.yaml"
    config.write_text(config.read_text() + "engine: [unclosed\n")
    for cmd in (["start", "ep"], ["status", "ep"]):
        out = cli(*cmd, check=False)
        assert out.returncode == 1
        assert out.stderr.count("\n") == 1 and "invalid YAML: line " in out.stderr, out.stderr

    cli("configure", "site", "--broker-url", "http://127.0.0.1:9", "--multi-user")
    mapping = cli.home / "endpoints" / "site" / "identity_mapping.yaml"
    mapping.write_text("map: {alice: alice\n")
    out = cli("render-user-config", "site", "--user", "alice", "--user-config", "{}",
              check=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "identity_mapping.yaml: invalid YAML: line " \
        in out.stderr, out.stderr


def test_a_batch_python_that_does_not_exist_is_refused_at_start(cli) -> None:  # type: ignore[no-untyped-def]
    cli("configure", "ep", "--broker-url", "http://127.0.0.1:9")
    config = cli.home / "endpoints" / "ep" / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["engine"] = {"type": "batch", "scheduler": "slurm", "python": "/opt/fnrelay/bin/python"}
    config.write_text(yaml.safe_dump(data))
    cli.env["FNRELAY_TOKEN"] = "some-token"
    out = cli("start", "ep", check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "'engine.python'" in out.stderr and "/opt/fnrelay/bin/python" in out.stderr


def test_render_user_config_needs_no_broker_start(cli) -> None:  # type: ignore[no-untyped-def]
    """An admin checks a template right after `configure --multi-user`, before any start."""
    cli("configure", "site", "--broker-url", "http://127.0.0.1:9", "--multi-user")
    out = cli("render-user-config", "site", "--user-config", '{"conda_env": "analysis"}',
              check=False)
    assert out.returncode == 0, out.stderr
    assert 'worker_init: "conda activate analysis"' in out.stdout
