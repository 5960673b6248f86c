"""An unprivileged user of the same machine against the local stack and a default broker.

The attacker is a real account (`fnrelay-attacker`, made once if missing) and its attempts run
as it (`runuser`): reading files, listing directories, reading /proc. Logins to RabbitMQ are
made from this process: on 127.0.0.1 RabbitMQ cannot tell one local user from another, so a
root process's attempt is the attacker's.

One `fnrelay local up` serves the whole module (started as a user starts it, by the CLI).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
import requests

from fnrelay.devstack.rabbitmq import make_shared_tmpdir
from support.stack_processes import left_running

ATTACKER = "fnrelay-attacker"
BIN = Path(sys.executable).parent
FNRELAY = str(BIN / "fnrelay")
BROKER_CLI = str(BIN / "fnrelay-broker")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without fnrelay's variables (a fresh shell)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    return {**env, **extra}


def as_attacker(*argv: str) -> subprocess.CompletedProcess:
    """Run `argv` as the unprivileged local user (from /, which it may enter)."""
    return subprocess.run(["runuser", "-u", ATTACKER, "--", *argv], capture_output=True,
                          timeout=60, cwd="/")


def private(path: Path) -> bool:
    """Neither group nor others have any permission on `path`."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.fixture(scope="session")
def attacker() -> str:
    try:
        pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", ATTACKER], check=True, capture_output=True)
    return ATTACKER


@dataclass
class Stack:
    dir: Path
    exports_text: str
    exports: dict[str, str]
    state: dict

    @property
    def rabbitmq_dir(self) -> Path:
        return Path(self.state["rabbitmq"]["dir"])

    @property
    def admin_password(self) -> str:
        return self.state["rabbitmq"]["admin_password"]

    @property
    def broker_url(self) -> str:
        return self.exports["FNRELAY_BROKER_URL"]


def _parse_exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        key, _, value = words[1].partition("=")
        out[key] = value
    return out


def _down(path: Path) -> None:
    if (path / "state.json").exists():
        subprocess.run([FNRELAY, "local", "down", "--dir", str(path)], capture_output=True,
                       timeout=120, env=clean_env())
    for pid in left_running(path):
        os.kill(pid, 9)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = make_shared_tmpdir("fnrelay-localhost-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(base: Path, attacker: str) -> Iterator[Stack]:
    path = base / "stack"
    up = subprocess.run([FNRELAY, "local", "up", "--dir", str(path)], capture_output=True,
                        text=True, timeout=300, env=clean_env())
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((path / "state.json").read_text())
        yield Stack(path, up.stdout, _parse_exports(up.stdout), state)
    finally:
        _down(path)


def test_another_local_user_cannot_list_the_stack_or_read_its_database(stack: Stack):
    db = stack.dir / "broker.db"
    assert db.exists()
    assert as_attacker("ls", str(stack.dir)).returncode != 0
    assert as_attacker("cat", str(db)).returncode != 0
    assert private(db)


def test_no_file_of_the_stack_or_its_rabbitmq_is_readable_by_another_local_user(stack: Stack):
    """The broker's database and log, RabbitMQ's config (it holds the administrator's password),
    its Erlang cookie and message store, the endpoint's journal: none is readable."""
    found = as_attacker("find", str(stack.dir), str(stack.rabbitmq_dir), "-type", "f",
                        "-readable")
    assert found.stdout.decode().split() == []
    for d in (stack.dir, stack.rabbitmq_dir):
        assert stat.S_IMODE(d.stat().st_mode) & 0o007 == 0, d


def test_no_password_or_token_of_the_stack_is_in_a_command_line(stack: Stack):
    """/proc/PID/cmdline (what `ps` shows) is readable by every local user; the environment,
    where the secrets go instead, only by the process's owner."""
    broker_pid = stack.state["broker"]["pid"]
    own = as_attacker("cat", f"/proc/{broker_pid}/cmdline")
    assert own.returncode == 0 and b"fnrelay-broker" in own.stdout  # the attacker can look
    every = as_attacker("sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null; true").stdout
    for secret in (stack.admin_password, stack.exports["FNRELAY_TOKEN"]):
        assert secret.encode() not in every
    assert as_attacker("cat", f"/proc/{broker_pid}/environ").returncode != 0


def test_rabbitmq_has_no_guest_account(stack: Stack):
    rabbit = stack.state["rabbitmq"]
    guest = pika.PlainCredentials("guest", "guest")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", rabbit["amqp_port"], credentials=guest, connection_attempts=1,
            socket_timeout=10)).close()
    api = f"http://127.0.0.1:{rabbit['management_port']}/api"
    assert requests.get(f"{api}/whoami", auth=("guest", "guest"), timeout=10).status_code == 401
    users = requests.get(f"{api}/users", auth=(rabbit["admin_user"], stack.admin_password),
                         timeout=10)
    assert users.ok and "guest" not in [u["name"] for u in users.json()]


def test_the_saved_sdk_credentials_are_readable_by_their_owner_only(stack: Stack, base: Path):
    saved = Path(stack.exports["FNRELAY_HOME"]) / "credentials.json"
    assert saved.exists() and private(saved)
    assert as_attacker("cat", str(saved)).returncode != 0

    home = base / "login-home"
    login = subprocess.run([FNRELAY, "login", "--broker-url", stack.broker_url, "--token", "-"],
                           input=stack.exports["FNRELAY_TOKEN"], capture_output=True,
                           text=True, timeout=60, env=clean_env(FNRELAY_HOME=str(home)))
    assert login.returncode == 0, login.stderr
    assert private(home) and private(home / "credentials.json")
    assert as_attacker("cat", str(home / "credentials.json")).returncode != 0


def test_broker_user_add_on_the_default_location_makes_a_private_database(base: Path,
                                                                           attacker: str):
    home = base / "broker-home"
    out = subprocess.run([BROKER_CLI, "user", "add", "dave"], capture_output=True, text=True,
                         timeout=60, env=clean_env(FNRELAY_HOME=str(home)))
    assert out.returncode == 0, out.stderr
    db = home / "broker" / "broker.db"
    assert as_attacker("cat", str(db)).returncode != 0
    assert private(home) and private(home / "broker")
    for f in (home / "broker").iterdir():
        assert private(f), f


def test_user_add_after_eval_local_up_makes_a_token_the_stacks_broker_accepts(stack: Stack):
    """Issue 16 item 10: the shell a user pointed at the stack manages the stack's users."""
    script = f'eval "$STACK_EXPORTS"; {shlex.quote(BROKER_CLI)} user add eve'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         env=clean_env(STACK_EXPORTS=stack.exports_text))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    who = requests.get(f"{stack.broker_url}/v1/whoami",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert who.status_code == 200, who.text
    assert who.json()["username"] == "eve"
    assert str(stack.dir / "broker.db") in out.stdout  # it says where it wrote


def test_a_squatted_rabbitmq_directory_under_tmp_is_refused(base: Path, attacker: str):
    """As root with a stack directory the rabbitmq user cannot reach (under /root, say), the
    node's data goes to a directory under /tmp named after it. Another local user who made that
    directory first must not get root to write through their symlinks (or use their files)."""
    hidden = base / "hidden"
    hidden.mkdir(mode=0o700)
    path = hidden / "stack"
    digest = hashlib.sha256(str(path / "rabbitmq").encode()).hexdigest()[:12]
    squat = Path("/tmp") / f"fnrelay-rabbitmq-{digest}"
    victim = base / "victim"
    victim.write_text("precious\n")
    try:
        made = as_attacker("sh", "-c", f"mkdir -m 777 {squat} && "
                           f"ln -s {victim} {squat}/enabled_plugins && "
                           f"ln -s {victim} {squat}/rabbitmq.conf")
        assert made.returncode == 0, made.stderr
        up = subprocess.run([FNRELAY, "local", "up", "--dir", str(path)], capture_output=True,
                            text=True, timeout=300, env=clean_env())
        assert up.returncode != 0
        assert str(squat) in up.stderr and "Traceback" not in up.stderr
        assert victim.read_text() == "precious\n" and victim.stat().st_uid == 0
    finally:
        _down(path)
        shutil.rmtree(squat, ignore_errors=True)


def test_an_endpoints_directory_and_config_are_its_owners_alone(tmp_path, attacker):
    """config.yaml may hold the endpoint's token, endpoint.json names it."""
    home = tmp_path / "home"
    out = subprocess.run([str(BIN / "fnrelay-endpoint"), "configure", "site",
                          "--broker-url", "http://127.0.0.1:9"], capture_output=True, text=True,
                         env=clean_env(FNRELAY_HOME=str(home)), timeout=60)
    assert out.returncode == 0, out.stderr
    site = home / "endpoints" / "site"
    for path in (home, home / "endpoints", site, site / "config.yaml"):
        assert private(path), oct(path.stat().st_mode)
    os.chmod(tmp_path, 0o755)
    assert as_attacker("cat", str(site / "config.yaml")).returncode != 0
