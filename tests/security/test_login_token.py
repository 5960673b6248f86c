"""`login` takes a token without putting it on the command line, which every local user reads
(`ps`, /proc/PID/cmdline): from stdin (`--token -`), a file only its owner may read
(`--token-file`) or the unechoed prompt. `--token VALUE` still works, with a warning. Both
login commands, the SDK's `fnrelay` and `fnrelay-endpoint`, against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = ["fnrelay", "fnrelay-endpoint"]
WARNING = "visible to every user of this machine"


def _login(command: str, home: Path, url: str, *args: str, stdin: str = ""
           ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    return subprocess.run([str(BIN / command), "login", "--broker-url", url, *args],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          env={**env, "FNRELAY_HOME": str(home)})


def _saved(home: Path) -> str | None:
    path = home / "credentials.json"
    return json.loads(path.read_text())["token"] if path.exists() else None


@pytest.fixture
def user(broker) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """(name, token) of a new user of the shared test broker."""
    name = f"login-{uuid.uuid4().hex[:8]}"
    return name, broker.add_user(name)


@pytest.mark.parametrize("command", COMMANDS)
def test_login_takes_the_token_from_stdin_or_the_prompt_unwarned(
        command, broker, user, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name, token = user
    for i, args in enumerate((["--token", "-"], [])):
        home = tmp_path / f"home-{i}"
        out = _login(command, home, broker.url, *args, stdin=token + "\n")
        assert out.returncode == 0, out.stderr
        assert f"as {name}" in out.stdout and WARNING not in out.stderr
        assert token not in out.stdout + out.stderr
        assert _saved(home) == token


@pytest.mark.parametrize("command", COMMANDS)
def test_login_reads_a_token_file_only_if_others_cannot(
        command, broker, user, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name, token = user
    secret = tmp_path / "token"
    secret.write_text(token + "\n")
    secret.chmod(0o644)
    refused = _login(command, tmp_path / "refused", broker.url, "--token-file", str(secret))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "chmod 600" in refused.stderr and token not in refused.stderr
    assert _saved(tmp_path / "refused") is None

    secret.chmod(0o600)
    out = _login(command, tmp_path / "home", broker.url, "--token-file", str(secret))
    assert out.returncode == 0, out.stderr
    assert f"as {name}" in out.stdout and WARNING not in out.stderr
    assert _saved(tmp_path / "home") == token

    both = _login(command, tmp_path / "both", broker.url, "--token-file", str(secret),
                  "--token", "-", stdin=token)
    assert both.returncode != 0 and "not both" in both.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_token_on_the_command_line_still_works_but_is_warned_about(
        command, broker, user, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name, token = user
    out = _login(command, tmp_path / "home", broker.url, "--token", token)
    assert out.returncode == 0, out.stderr
    assert f"as {name}" in out.stdout
    assert WARNING in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert _saved(tmp_path / "home") == token
