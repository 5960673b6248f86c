"""`fnrelay-endpoint` without a broker: files it writes and errors users see."""

from __future__ import annotations

import json
import uuid

import yaml

from fnrelay_endpoint.config import EndpointConfig


def test_configure_writes_config_and_a_lasting_id(cli) -> None:  # type: ignore[no-untyped-def]
    cli("configure", "ep1", "--broker-url", "http://127.0.0.1:9", "--max-workers", "3")
    d = cli.home / "endpoints" / "ep1"
    config = EndpointConfig.from_dict(yaml.safe_load((d / "config.yaml").read_text()))
    assert (config.broker_url, config.max_workers, config.prefetch) == (
        "http://127.0.0.1:9", 3, 512)
    endpoint_id = json.loads((d / "endpoint.json").read_text())["endpoint_id"]
    assert uuid.UUID(endpoint_id)

    again = cli("configure", "ep1", "--broker-url", "http://127.0.0.1:9", check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    cli("configure", "ep1", "--broker-url", "http://127.0.0.1:10", "--force")
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
    out = cli("start", "ep", check=False)
    assert out.returncode == 1
    assert "did not start" in out.stderr and "cannot reach the broker" in out.stderr
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
