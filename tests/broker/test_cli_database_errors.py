"""`fnrelay-broker` never prints a database password: an unreachable or malformed PostgreSQL
URL gives one clear line naming the database with its password blotted out, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fnrelay.devstack.processes import free_port

BROKER_CLI = str(Path(sys.executable).parent / "fnrelay-broker")

PASSWORD = "Pw-0f-the-DB-9z"  # noqa: S105 - the secret the output must not show


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROKER_CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [
    ["serve", "--port", "0"],
    ["user", "add", "someone"],
    ["token", "revoke", "not-a-token"],
    ["db", "upgrade"],
    ["db", "current"],
])
def test_unreachable_postgres_is_named_without_its_password(command):
    url = f"postgresql://fnrelay:{PASSWORD}@127.0.0.1:{free_port()}/fnrelay"
    out = _run(*command, "--db", url)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert PASSWORD not in text
    assert "Traceback" not in text
    assert "fnrelay:***@127.0.0.1" in text
    assert "Connection refused" in text or "connection failed" in text, text


def test_malformed_url_is_a_clear_error_without_its_password():
    out = _run("serve", "--db", f"postgresql://fnrelay:{PASSWORD}@127.0.0.1:notaport/fnrelay")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert PASSWORD not in text
    assert "Traceback" not in text
    assert "malformed database URL" in text
