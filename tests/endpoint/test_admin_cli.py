"""The admin commands Globus Compute's endpoint CLI has, as `fnrelay-endpoint` offers them
(issue 19): login, logout, whoami, restart, python-exec, enable-on-boot and disable-on-boot
(systemd units checked with the real `systemd-analyze verify` and `systemctl --root`; nothing is
started), and configure's --display-name, --auth-policy and file overrides."""

from __future__ import annotations

import http.server
import json
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from fnrelay_endpoint.config.model import EndpointConfig, ManagerConfig, is_multi_user


def _login(cli, broker) -> None:  # type: ignore[no-untyped-def]
    out = cli("login", "--broker-url", broker.url, "--token", "-", stdin=broker.token)
    assert "as alice" in out.stdout


def test_login_whoami_logout_keep_the_token_endpoints_use(cli, broker) -> None:  # type: ignore[no-untyped-def]
    out = cli("whoami", check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "login" in out.stderr
    bad = cli("login", "--broker-url", broker.url, "--token", "-", check=False,
              stdin="not-a-token")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert not (cli.home / "credentials.json").exists()

    _login(cli, broker)
    creds = cli.home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "Already logged in as alice" in cli("login", "--broker-url", broker.url).stdout
    assert cli("whoami", "--linked-identities").stdout.startswith("alice (")

    # An endpoint without 'token' in config.yaml runs on the saved one; logout waits for it.
    cli("configure", "ep", "--broker-url", broker.url, "--max-workers", "1")
    cli("start", "ep")
    pid = cli.pid("ep")
    refused = cli("logout")
    assert "currently running: ep" in refused.stdout and creds.exists()

    cli("restart", "ep")
    assert cli.pid("ep") != pid
    assert "running" in cli("status", "ep").stdout

    assert "Logout succeeded" in cli("logout", "--force").stdout
    assert not creds.exists()
    missing = cli("restart", "nope", check=False)
    assert missing.returncode == 1 and "no endpoint named 'nope'" in missing.stderr


def test_login_elsewhere_never_sends_the_saved_or_environment_token(cli, broker) -> None:  # type: ignore[no-untyped-def]
    """`login --broker-url OTHER` checks "already logged in" only with a token saved for
    OTHER: a link to "our broker" must not collect the token of the real one."""
    _login(cli, broker)
    seen: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization") or "")
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        other = f"http://127.0.0.1:{server.server_port}"
        cli.env["FNRELAY_TOKEN"] = broker.token
        out = cli("login", "--broker-url", other, check=False, stdin="typed-token\n")
    finally:
        server.shutdown()
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert seen == ["Bearer typed-token"], seen  # only what the user typed for that broker


def test_python_exec_runs_a_module_with_its_arguments(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "d.json"
    data.write_text('{"b": 1, "a": 2}')
    out = cli("python-exec", "json.tool", "--sort-keys", "--compact", str(data))
    assert out.stdout.strip() == '{"a":2,"b":1}'


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    return root


def test_enable_on_boot_writes_a_unit_systemd_accepts(cli, broker, unit_root) -> None:  # type: ignore[no-untyped-def]
    unit_dir = unit_root / "etc" / "systemd" / "system"
    cli("configure", "ep", "--broker-url", broker.url)
    no_token = cli("enable-on-boot", "ep", "--unit-dir", str(unit_dir), check=False)
    assert no_token.returncode == 1 and "no token" in no_token.stderr
    _login(cli, broker)

    out = cli("enable-on-boot", "ep", "--unit-dir", str(unit_dir))
    unit = unit_dir / "fnrelay-endpoint-ep.service"
    assert f"Systemd service installed at {unit}" in out.stdout
    assert "systemctl enable fnrelay-endpoint-ep --now" in out.stdout
    text = unit.read_text()
    assert "start ep --foreground" in text and f"FNRELAY_HOME={cli.home}" in text

    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True)
    assert verify.returncode == 0, verify.stderr
    enable = subprocess.run(["systemctl", f"--root={unit_root}", "enable", unit.name],
                            capture_output=True, text=True)
    assert enable.returncode == 0, enable.stderr
    assert (unit_dir / "multi-user.target.wants" / unit.name).is_symlink()

    again = cli("enable-on-boot", "ep", "--unit-dir", str(unit_dir), check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    off = cli("disable-on-boot", "ep", "--unit-dir", str(unit_dir)).stdout
    assert "systemctl disable fnrelay-endpoint-ep" in off and f"rm {unit}" in off
    assert unit.exists()  # it prints what to run; it changes nothing

    cli("start", "ep")
    unit.unlink()
    running = cli("enable-on-boot", "ep", "--unit-dir", str(unit_dir), check=False)
    assert running.returncode == 1 and "is running" in running.stderr
    gone = cli("disable-on-boot", "ep", "--unit-dir", str(unit_dir), check=False)
    assert gone.returncode == 1 and "has no systemd unit" in gone.stderr
    nodir = cli("enable-on-boot", "ep", "--unit-dir", str(unit_root / "none"), check=False)
    assert nodir.returncode == 1 and "no systemd unit directory" in nodir.stderr
    assert "/etc/systemd/system" in cli("enable-on-boot", "--help").stdout


def test_configure_takes_gc_options_and_file_overrides(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = "http://127.0.0.1:9"
    cli("configure", "one", "--broker-url", url, "--display-name", "Site A")
    config = EndpointConfig.load(cli.home / "endpoints" / "one" / "config.yaml")
    assert config.display_name == "Site A"

    policy = cli("configure", "two", "--broker-url", url, "--auth-policy", "abc", check=False)
    assert policy.returncode == 1 and "--auth-policy is not supported by fnrelay" in (
        policy.stderr)
    assert not (cli.home / "endpoints" / "two").exists()

    core = tmp_path / "core.yaml"  # GC's keys: its engine and a heartbeat
    core.write_text(yaml.safe_dump({"heartbeat_period": 15, "engine": {
        "type": "ProcessPoolEngine", "max_workers": 2}}))
    out = cli("configure", "three", "--broker-url", url, "--core-config", str(core))
    assert "engine ProcessPoolEngine -> fnrelay's local engine" in out.stdout
    config = EndpointConfig.load(cli.home / "endpoints" / "three" / "config.yaml")
    assert (config.heartbeat_period, config.max_workers) == (15.0, 2)

    template, schema = tmp_path / "t.yaml.j2", tmp_path / "s.json"
    template.write_text("engine:\n  type: ThreadPoolEngine\n")
    schema.write_text(json.dumps({"type": "object"}))
    idmap = tmp_path / "idmap.json"
    idmap.write_text(json.dumps([{"DATA_TYPE": "expression_identity_mapping#1.0.0",
                                  "mappings": [{"source": "{username}", "match": "(.*)",
                                                "output": "{0}"}]}]))
    single = cli("configure", "four", "--broker-url", url, "--template-config", str(template),
                 check=False)
    assert single.returncode == 1 and "require a multi-user endpoint" in single.stderr
    env = tmp_path / "user_environment.yaml"
    env.write_text("HOME: /elsewhere\n")
    home = cli("configure", "six", "--broker-url", url, "--multi-user", "--user-env-config",
               str(env), check=False)
    assert home.returncode == 1 and "HOME cannot be set here" in home.stderr
    env.write_text("SITE_SCRATCH: /scratch\n")
    cli("configure", "plain", "--broker-url", url, "--multi-user", "false")
    assert not is_multi_user(cli.home / "endpoints" / "plain" / "config.yaml")
    cli("configure", "five", "--broker-url", url, "--multi-user", "true", "--template-config",
        str(template), "--schema-config", str(schema), "--id-mapping-config", str(idmap),
        "--user-env-config", str(env))
    d = cli.home / "endpoints" / "five"
    manager = ManagerConfig.load(d / "config.yaml")
    assert (manager.template_dialect, manager.identity_mapping) == ("globus-compute",
                                                                    "idmap.json")
    assert (d / "user_config_template.yaml.j2").read_text() == template.read_text()
    assert json.loads((d / "user_config_schema.json").read_text()) == {"type": "object"}
    assert (d / "user_environment.yaml").read_text() == "SITE_SCRATCH: /scratch\n"
