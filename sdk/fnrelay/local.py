"""The all-in-one local stack: RabbitMQ, a broker, a user and one endpoint on this machine.

`fnrelay local up|down|status` and the test fixtures share this code, so what the tests start
is what users start. Every process the stack starts carries the environment variable
FNRELAY_LOCAL_STACK=<its directory>, so `down` can prove that nothing it started survives
(worker pools and Erlang helpers included) by scanning /proc for that marker.

On a shared machine the stack is its owner's alone: RabbitMQ has no guest account (its
administrator's random password is kept in a 0600 file), passwords reach processes by their
environment (readable by their owner only), never their command line (readable by all), and
directories are 0700 and files 0600 (the stack's directory 0710 with group rabbitmq when
RabbitMQ, run as that user, keeps its data inside it).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import requests

from fnrelay.amqp import requests_verify
from fnrelay.config import (
    ENV_BROKER_DB,
    ENV_BROKER_URL,
    ENV_ENDPOINT_ID,
    ENV_HOME,
    ENV_TOKEN,
    private_mkdir,
    save_credentials,
    write_private,
)
from fnrelay.errors import FnRelayError

MARKER = "FNRELAY_LOCAL_STACK"
RABBITMQ_BIN = Path(os.environ.get("FNRELAY_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
RABBITMQ_USER = "rabbitmq"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

Log = Callable[[str], None]


class LocalStackError(FnRelayError):
    """The local stack could not be started, stopped or inspected."""


def _quiet(_: str) -> None:
    pass


# --- process helpers (shared with tests/conftest.py) ----------------------------------------
def free_port(exclude: Iterable[int] = ()) -> int:
    """A TCP port that is free on 127.0.0.1 now and not in `exclude`."""
    taken = set(exclude)
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
    raise LocalStackError("could not find a free TCP port")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check: Callable[[], Any], what: str, timeout: float = START_TIMEOUT,
               interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; a clear error names `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LocalStackError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, **kw: Any) -> bool:
    """True if GET `url` answers 2xx."""
    try:
        return requests.get(url, timeout=2, **kw).ok
    except requests.RequestException:
        return False


def executable(name: str) -> str:
    """A console script of this installation (next to the running Python), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise LocalStackError(
            f"{name} not found: install fnrelay with `pip install 'fnrelay[all]'`")
    return found


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a long-lived process in its own session (a Ctrl-C on the caller leaves it alone);
    its output goes to `log`, readable by its owner only."""
    private_mkdir(log.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    with os.fdopen(os.open(log, flags, 0o600), "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def pid_alive(pid: int | None) -> bool:
    """True if `pid` runs (a zombie child is reaped and counts as gone)."""
    if not pid:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int | None, timeout: float = STOP_TIMEOUT, group: bool = False) -> None:
    """SIGTERM `pid` (or its process group), then SIGKILL if it is still there after `timeout`."""
    if not pid_alive(pid):
        return
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_until(lambda: not pid_alive(pid), f"process {pid} to stop", timeout, 0.05)
    except LocalStackError:
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_until(lambda: not pid_alive(pid), f"process {pid} to die", 10, 0.05)


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds FNRELAY_LOCAL_STACK=`marker` (zombies excluded)."""
    needle = f"{MARKER}={marker}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if (env.startswith(needle) or b"\0" + needle in env) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def reap_marked(marker: str, log: Log = _quiet, grace: float = 10.0) -> list[int]:
    """Kill what is left of the processes carrying `marker` after `grace` seconds (wrappers exit
    a moment after what they wrap); returns the pids that had to be killed.

    epmd (Erlang's port mapper, started by the first Erlang node) is left alone while other
    Erlang nodes still use it.
    """
    def left_over() -> list[int]:
        return [p for p in marked_pids(marker) if _comm(p) != "epmd" or not _epmd_in_use()]

    try:
        wait_until(lambda: not left_over(), "processes to exit", grace, 0.1)
    except LocalStackError:
        pass
    left = left_over()
    for pid in left:
        log(f"killing leftover process {pid} ({_comm(pid)})")
        stop_pid(pid, timeout=5)
    return left


def _epmd_in_use() -> bool:
    epmd = shutil.which("epmd") or "epmd"
    try:
        out = subprocess.run([epmd, "-names"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "name " in out.stdout


def _marked_env(marker: str, **extra: str) -> dict[str, str]:
    return {**os.environ, MARKER: marker, **extra}


# --- RabbitMQ ---------------------------------------------------------------------------------
def _is_root() -> bool:
    return os.geteuid() == 0


def _as_rabbitmq(argv: list[str], env: dict[str, str]) -> list[str]:
    """`argv` with `env`, run as the rabbitmq user when we are root (it refuses to run as root).

    The /usr/sbin wrappers reset the environment, so the real scripts are called through `env`.
    """
    assignments = [f"{k}={v}" for k, v in env.items()]
    if _is_root():
        return ["runuser", "-u", RABBITMQ_USER, "--", "env", *assignments, *argv]
    return ["env", *assignments, *argv]


class RabbitMQServer:
    """A private RabbitMQ node with its data, logs, Erlang cookie and ports under `dir`.

    Ports left as None are chosen free at start(). The node has the management plugin and one
    account, an administrator for the broker, whose random password is kept in
    `dir`/admin-password (0600) so that a node restarted on its kept data can be logged into.
    There is no guest account: on 127.0.0.1 every local user would be guest.
    """

    def __init__(self, dir: Path | str, amqp_port: int | None = None,
                 dist_port: int | None = None, management_port: int | None = None,
                 admin_user: str = "admin", admin_password: str | None = None,
                 marker: str | None = None, log: Log = _quiet,
                 tls: tuple[str, str, str] | None = None):
        self.dir = Path(dir).resolve()
        self.amqp_port = amqp_port
        #: (certfile, keyfile, cafile): also listen for amqps on `amqps_port` (opt-in).
        self.tls = tls
        self.amqps_port: int | None = None
        self.dist_port = dist_port
        self.management_port = management_port
        self.admin_user = admin_user
        self.admin_password = (admin_password or self._kept_password()
                               or secrets.token_urlsafe(18))
        for what, value in (("user", admin_user), ("password", self.admin_password)):
            if not _CONF_WORD.fullmatch(value):  # it goes into rabbitmq.conf as it is
                raise LocalStackError(f"the RabbitMQ administrator's {what} may hold only "
                                      "letters, digits, '.', '_' and '-'")
        self.marker = marker or str(self.dir)
        self.log = log
        self.proc: subprocess.Popen | None = None

    # addresses
    @property
    def nodename(self) -> str:
        return f"fnrelay-{self.amqp_port}@localhost"

    @property
    def amqp_url(self) -> str:
        """The administrator's URL of the default virtual host."""
        user, pw = quote(self.admin_user, safe=""), quote(self.admin_password, safe="")
        return f"amqp://{user}:{pw}@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def admin_auth(self) -> tuple[str, str]:
        return (self.admin_user, self.admin_password)

    @property
    def password_path(self) -> Path:
        return self.dir / "admin-password"

    def _kept_password(self) -> str | None:
        try:
            return self.password_path.read_text().strip() or None
        except OSError:
            return None

    @property
    def pid(self) -> int | None:
        """The Erlang VM's pid (RabbitMQ writes it once it has booted)."""
        try:
            return int((self.dir / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return pid_alive(self.pid) and http_ok(f"{self.management_url}/api/overview",
                                               auth=self.admin_auth)

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "amqp_port": self.amqp_port, "dist_port": self.dist_port,
                "management_port": self.management_port, "admin_user": self.admin_user,
                "admin_password": self.admin_password, "marker": self.marker, "pid": self.pid}

    @classmethod
    def from_dict(cls, d: dict[str, Any], log: Log = _quiet) -> RabbitMQServer:
        return cls(d["dir"], d["amqp_port"], d["dist_port"], d["management_port"],
                   d["admin_user"], d["admin_password"], d.get("marker"), log)

    # life cycle
    def _env(self) -> dict[str, str]:
        d = self.dir
        return {
            "HOME": str(d),  # the node's own Erlang cookie; rabbitmqctl must share it
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
        }

    def _choose_ports(self) -> None:
        taken: list[int] = []
        for attr in ("amqp_port", "dist_port", "management_port"):
            port = getattr(self, attr)
            if port is None or not port_free(port):
                port = free_port(exclude=taken)
            if not 0 < port < 65536:
                raise LocalStackError(f"{attr} {port} is out of range")
            taken.append(port)
            setattr(self, attr, port)
        if self.tls:
            self.amqps_port = free_port(exclude=taken)

    def _prepare_dir(self) -> None:
        """The node's directory, 0700 and (as root) the rabbitmq user's, with its config."""
        private_mkdir(self.dir)
        _refuse_foreign_dir(self.dir)
        os.chmod(self.dir, 0o700)
        (self.dir / "log").mkdir(exist_ok=True, mode=0o700)
        write_private(self.password_path, self.admin_password + "\n")
        write_private(self.dir / "enabled_plugins", "[rabbitmq_management].\n")
        # default_user replaces guest on a node's first boot (a node whose data an older
        # fnrelay made still has guest: _secure_accounts deletes it).
        write_private(self.dir / "rabbitmq.conf", (
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.management_port}\n"
            f"default_user = {self.admin_user}\n"
            f"default_pass = {self.admin_password}\n"
            "default_user_tags.administrator = true\n"
            "default_permissions.configure = .*\n"
            "default_permissions.read = .*\n"
            "default_permissions.write = .*\n"
            "log.console = false\n"
            "log.file.level = info\n"
            + self._tls_config()
        ))
        (self.dir / "pid").unlink(missing_ok=True)
        if _is_root():
            _chown_tree(self.dir, RABBITMQ_USER)
            probe = subprocess.run(["runuser", "-u", RABBITMQ_USER, "--", "test", "-w",
                                    str(self.dir), "-a", "-x", str(self.dir)])
            if probe.returncode != 0:
                raise LocalStackError(
                    f"RabbitMQ runs as user {RABBITMQ_USER!r}, which cannot reach {self.dir}: "
                    "make its parent directories traversable (chmod o+x) or choose --dir under "
                    "/tmp")

    def _tls_config(self) -> str:
        """An amqps listener with copies of the certificate files the node can read."""
        if not self.tls:
            return ""
        names = ("cert.pem", "key.pem", "ca.pem")
        for src, name in zip(self.tls, names, strict=True):
            write_private(self.dir / name, Path(src).read_text())
        cert, key, ca = (self.dir / n for n in names)
        return (f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}\n"
                f"ssl_options.certfile = {cert}\nssl_options.keyfile = {key}\n"
                f"ssl_options.cacertfile = {ca}\nssl_options.verify = verify_none\n"
                "ssl_options.fail_if_no_peer_cert = false\n")

    @property
    def amqps_url(self) -> str:
        """The administrator's amqps URL (host name `localhost`, as in test certificates)."""
        user, pw = quote(self.admin_user, safe=""), quote(self.admin_password, safe="")
        return f"amqps://{user}:{pw}@localhost:{self.amqps_port}/%2F"

    def start(self, timeout: float = START_TIMEOUT) -> RabbitMQServer:
        """Start the node and wait until AMQP and the management API answer."""
        server = RABBITMQ_BIN / "rabbitmq-server"
        if not server.exists():
            raise LocalStackError(
                f"RabbitMQ is not installed ({server} is missing): run "
                "`apt-get install rabbitmq-server` (or `make deps` as root)")
        self._choose_ports()
        self._prepare_dir()
        self.log(f"starting RabbitMQ node {self.nodename} (AMQP port {self.amqp_port}, "
                 f"management port {self.management_port}) in {self.dir}")
        argv = _as_rabbitmq([str(server)], self._env())
        self.proc = spawn(argv, self.dir / "server.out", _marked_env(self.marker))

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise LocalStackError(
                    f"RabbitMQ exited with status {self.proc.returncode}; see "
                    f"{self.dir / 'server.out'} and {self.dir / 'log'}")
            return self.pid is not None and _answers(f"{self.management_url}/api/overview")

        wait_until(up, f"RabbitMQ on port {self.amqp_port}", timeout, 0.25)
        self._secure_accounts()
        return self

    def _secure_accounts(self, timeout: float = 20.0) -> None:
        """Make sure the administrator logs in with `admin_password` and guest is gone.

        A fresh node has the administrator from rabbitmq.conf and no guest. A node whose data
        an older fnrelay made has guest (and the administrator with a password since lost):
        guest resets the administrator, then the administrator deletes guest.
        """
        api = f"{self.management_url}/api"
        admin = quote(self.admin_user, safe="")

        def logs_in(auth: tuple[str, str]) -> bool:
            return http_ok(f"{api}/whoami", auth=auth)

        def admin_ok() -> bool:
            if logs_in(self.admin_auth):
                return True
            if logs_in(_GUEST):
                try:
                    requests.put(f"{api}/users/{admin}", auth=_GUEST, timeout=10, json={
                        "password": self.admin_password, "tags": "administrator"})
                    requests.put(f"{api}/permissions/%2F/{admin}", auth=_GUEST, timeout=10,
                                 json={"configure": ".*", "write": ".*", "read": ".*"})
                except requests.RequestException:
                    pass  # tried again
            return False

        try:
            wait_until(admin_ok, "the RabbitMQ administrator to log in", timeout, 0.25)
        except LocalStackError:
            raise LocalStackError(
                f"cannot log in to RabbitMQ as {self.admin_user!r} with the password in "
                f"{self.password_path}: the node's data in {self.dir / 'mnesia'} has another; "
                "stop the node and remove that directory to start afresh") from None
        try:
            gone = requests.delete(f"{api}/users/guest", auth=self.admin_auth, timeout=10)
        except requests.RequestException as e:
            raise LocalStackError(f"cannot delete RabbitMQ's guest account: {e}") from e
        if gone.status_code not in (204, 404):
            raise LocalStackError(f"cannot delete RabbitMQ's guest account: HTTP "
                                  f"{gone.status_code} {gone.text[:200]}")

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `rabbitmqctl -n NODE ARGS` with the node's HOME (hence its Erlang cookie)."""
        argv = _as_rabbitmq([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
                            {"HOME": str(self.dir)})
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, 124, "", str(e))

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """`rabbitmqctl stop`, then make sure the Erlang VM is gone."""
        pid = self.pid
        if pid_alive(pid):
            self.log(f"stopping RabbitMQ node {self.nodename}")
            self.ctl("stop", timeout=timeout)
            try:
                wait_until(lambda: not pid_alive(pid), "RabbitMQ to stop", timeout, 0.1)
            except LocalStackError:
                stop_pid(pid, timeout=10)
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout=10)
            self.proc.wait()


_GUEST = ("guest", "guest")
#: What may go unquoted into rabbitmq.conf.
_CONF_WORD = re.compile(r"[A-Za-z0-9._-]+")


def _answers(url: str) -> bool:
    """True if `url` answers HTTP at all (401 included: the server is up)."""
    try:
        requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return True


def _chown_tree(path: Path, user: str) -> None:
    """chown -R that changes symlinks themselves, never what they point to."""
    uid = pwd.getpwnam(user).pw_uid
    os.chown(path, uid, -1, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, -1, follow_symlinks=False)


def _refuse_foreign_dir(path: Path) -> None:
    """Refuse a directory that is a symlink or belongs to another account than us or (as root)
    rabbitmq: another local user could have made it first to have root write through it."""
    st = os.lstat(path)
    owners = {os.geteuid()}
    if _is_root():
        owners.add(pwd.getpwnam(RABBITMQ_USER).pw_uid)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners:
        raise LocalStackError(
            f"{path} is not a directory of yours (or of {RABBITMQ_USER}): another local user may "
            f"have made it to trap you; remove it (rm -rf {path}) or choose another --dir")


def rabbitmq_dir_for(base: Path) -> Path:
    """Where RabbitMQ keeps its data: base/rabbitmq, unless (as root) the rabbitmq user could
    not reach base, e.g. under /root; then a directory under /tmp named after base, made here
    (root's, 0700: once it is ours, /tmp's sticky bit keeps others from replacing it)."""
    wanted = base.resolve() / "rabbitmq"
    if not _is_root() or _reachable_by_others(wanted.parent.parent):
        return wanted
    import hashlib

    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    path = Path("/tmp") / f"fnrelay-rabbitmq-{digest}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    _refuse_foreign_dir(path)
    return path


def _reachable_by_others(path: Path) -> bool:
    for p in [path, *path.parents]:
        if p.exists() and not p.stat().st_mode & 0o001:
            return False
    return True


def make_shared_tmpdir(prefix: str) -> Path:
    """A fresh directory under /tmp that the rabbitmq user can enter (mkdtemp makes 0700)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


# --- broker -------------------------------------------------------------------------------------
#: `fnrelay-broker serve --amqp-url` from the environment.
ENV_AMQP_URL = "FNRELAY_AMQP_URL"


class BrokerServer:
    """A `fnrelay-broker serve` process on `amqp_url` with its database and log under `dir`.

    With `management_url` (RabbitMQ's management API; `amqp_url` is then an administrator's)
    the broker gives every endpoint and task group reader its own RabbitMQ account.
    The URLs (they may hold passwords) reach `fnrelay-broker` by its environment, which only
    its owner can read, not by its command line, which every local user can.
    """

    def __init__(self, dir: Path | str, amqp_url: str, db_url: str | None = None,
                 port: int | None = None, extra_args: Iterable[str] = (),
                 marker: str | None = None, log: Log = _quiet, pid: int | None = None,
                 management_url: str | None = None):
        self.dir = Path(dir).resolve()
        self.amqp_url = amqp_url
        self.management_url = management_url
        self.db_url = db_url or f"sqlite:///{self.dir / 'broker.db'}"
        self.port = port
        self.extra_args = list(extra_args)
        self.marker = marker or str(self.dir)
        self.log = log
        self.proc: subprocess.Popen | None = None
        self._pid = pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self._pid

    def running(self) -> bool:
        return pid_alive(self.pid) and http_ok(f"{self.url}/v1/version")

    def start(self, timeout: float = START_TIMEOUT) -> BrokerServer:
        if self.port is None or not port_free(self.port):
            self.port = free_port()
        private_mkdir(self.dir)
        self.log(f"starting the broker on {self.url} (log: {self.log_path})")
        argv = [executable("fnrelay-broker"), "serve", "--host", "127.0.0.1",
                "--port", str(self.port),
                *(["--amqp-management-url", self.management_url] if self.management_url
                  else []),
                *self.extra_args]
        env = _marked_env(self.marker, **{ENV_HOME: str(self.dir), ENV_BROKER_DB: self.db_url,
                                          ENV_AMQP_URL: self.amqp_url})
        self.proc = spawn(argv, self.log_path, env)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise LocalStackError(
                    f"the broker exited with status {self.proc.returncode}:\n"
                    + _tail(self.log_path))
            return http_ok(f"{self.url}/v1/version")

        wait_until(up, f"the broker at {self.url}", timeout)
        return self

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`fnrelay-broker ARGS` on this broker's database."""
        return subprocess.run([executable("fnrelay-broker"), *args], capture_output=True,
                              text=True, env={**os.environ, ENV_BROKER_DB: self.db_url})

    def add_user(self, name: str) -> str:
        """Create user `name` (or, if it exists, a further token of it); returns the token."""
        out = self.cli("user", "add", name)
        if out.returncode != 0 and "exist" in out.stderr:
            out = self.cli("token", "create", name)
        if out.returncode != 0 or not out.stdout.strip():
            raise LocalStackError(f"cannot create broker user {name!r}: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1]

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if pid_alive(self.pid):
            self.log("stopping the broker")
        stop_pid(self.pid, timeout)
        if self.proc is not None:
            self.proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# --- endpoint -----------------------------------------------------------------------------------
class LocalEndpoint:
    """One endpoint NAME under FNRELAY_HOME=`home`, driven through the `fnrelay-endpoint` CLI.

    `start(foreground=True)` keeps the endpoint as a child process (tests use it to kill it);
    the default lets `fnrelay-endpoint start` put it in the background.
    """

    def __init__(self, home: Path | str, name: str, broker_url: str, token: str,
                 marker: str | None = None, log: Log = _quiet):
        self.home = Path(home).resolve()
        self.name = name
        self.broker_url = broker_url
        self.token = token
        self.marker = marker or str(self.home)
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.foreground = False

    @property
    def dir(self) -> Path:
        return self.home / "endpoints" / self.name

    @property
    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def endpoint_id(self) -> str:
        try:
            return json.loads((self.dir / "endpoint.json").read_text())["endpoint_id"]
        except (OSError, ValueError, KeyError) as e:
            raise LocalStackError(f"endpoint {self.name!r} has no id yet: {e}") from e

    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        try:
            return int((self.dir / "endpoint.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def env(self) -> dict[str, str]:
        return _marked_env(self.marker, **{ENV_HOME: str(self.home),
                                           ENV_BROKER_URL: self.broker_url,
                                           ENV_TOKEN: self.token})

    def cli(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([executable("fnrelay-endpoint"), *args], env=self.env(),
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise LocalStackError(f"`fnrelay-endpoint {' '.join(args)}` hung: {e}") from e

    def configure(self, **overrides: Any) -> LocalEndpoint:
        """`fnrelay-endpoint configure` (once), then apply `overrides` to config.yaml.

        Each override replaces the key of that name wherever it sits in config.yaml (for
        example max_workers=4 sets engine.max_workers); a dict value is merged.
        """
        private_mkdir(self.home)
        save_credentials(self.broker_url, self.token, home=self.home)
        if not self.config_path.exists():
            out = self.cli("configure", self.name, "--broker-url", self.broker_url)
            if out.returncode != 0:
                raise LocalStackError(
                    f"fnrelay-endpoint configure {self.name} failed: {out.stderr.strip()}")
        import yaml

        config = yaml.safe_load(self.config_path.read_text()) or {}
        if config.get("broker_url") != self.broker_url:
            # A stack started again gets a broker on a new port: point the kept endpoint (and
            # its id, so its queue and journal) at it.
            overrides = {"broker_url": self.broker_url, **overrides}
        if overrides:
            for key, value in overrides.items():
                _set_key(config, key, value)
            write_private(self.config_path, yaml.safe_dump(config, sort_keys=False))
        # It may hold a token ('token:'): its owner's alone, whoever wrote it.
        os.chmod(self.config_path, 0o600)
        return self

    def start(self, foreground: bool | None = None, timeout: float = START_TIMEOUT
              ) -> LocalEndpoint:
        """Start the endpoint and wait until the broker reports it online.

        `foreground` defaults to what the previous start used (else False).
        """
        if foreground is not None:
            self.foreground = foreground
        if not self.config_path.exists():
            self.configure()
        self.log(f"starting endpoint {self.name!r}")
        if self.foreground:
            argv = [executable("fnrelay-endpoint"), "start", self.name, "--foreground"]
            self.proc = spawn(argv, self.home / f"{self.name}.console.log", self.env())
        else:
            out = self.cli("start", self.name, timeout=timeout)
            if out.returncode != 0:
                raise LocalStackError(
                    f"fnrelay-endpoint start {self.name} failed: "
                    f"{(out.stderr or out.stdout).strip()}\n{_tail(self.dir / 'endpoint.log')}")
        self.wait_status("online", timeout)
        return self

    def status(self) -> str:
        """What the broker says: "online" or "offline" ("unknown" if it cannot be asked)."""
        try:
            r = requests.get(f"{self.broker_url}/v1/endpoints/{self.endpoint_id}/status",
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=5,
                             verify=requests_verify())
        except (requests.RequestException, LocalStackError):
            return "unknown"
        return r.json().get("status", "unknown") if r.ok else "unknown"

    def wait_status(self, status: str, timeout: float = START_TIMEOUT) -> None:
        def reached() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise LocalStackError(
                    f"endpoint {self.name!r} exited with status {self.proc.returncode}:\n"
                    + _tail(self.home / f"{self.name}.console.log"))
            return self.status() == status

        wait_until(reached, f"endpoint {self.name!r} to be {status}", timeout, 0.2)

    def running(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """`fnrelay-endpoint stop NAME`; SIGTERM and then SIGKILL whatever is left of it."""
        pid = self.pid
        if not pid_alive(pid):
            return
        self.log(f"stopping endpoint {self.name!r}")
        self.cli("stop", self.name, timeout=timeout + 10)
        try:
            wait_until(lambda: not pid_alive(pid), f"endpoint {self.name!r} to stop", timeout)
        except LocalStackError:
            stop_pid(pid, timeout=5, group=self.proc is not None)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the endpoint and its workers at once, as a crash would."""
        pid = self.pid
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL) if self.proc is not None else os.kill(
                    pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: not pid_alive(pid), f"endpoint {self.name!r} to die", 10, 0.05)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
            self.proc = None


def _set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` where it already is in the nested `config`, else at the top level."""
    def find(d: dict[str, Any]) -> dict[str, Any] | None:
        if key in d:
            return d
        for v in d.values():
            if isinstance(v, dict) and (hit := find(v)) is not None:
                return hit
        return None

    where = find(config) or config
    if isinstance(value, dict) and isinstance(where.get(key), dict):
        where[key].update(value)
    else:
        where[key] = value


# --- the whole stack ----------------------------------------------------------------------------
def default_dir() -> Path:
    """$FNRELAY_HOME/local, else ~/.fnrelay/local."""
    home = os.environ.get(ENV_HOME)
    return (Path(home) if home else Path.home() / ".fnrelay").expanduser() / "local"


class LocalStack:
    """RabbitMQ + broker + user `local` + endpoint `default`, all under one directory."""

    USER = "local"
    ENDPOINT = "default"

    def __init__(self, dir: Path | str | None = None, log: Log = _quiet):
        self.dir = Path(dir or default_dir()).expanduser().resolve()
        self.log = log

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    def state(self) -> dict[str, Any] | None:
        """The state file's contents (None if there is none); LocalStackError if it cannot be
        read or lacks what the stack wrote into it (a hand edit, a full disk)."""
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LocalStackError(f"cannot read {self.state_path}: {e}") from e
        problem = _state_problem(state)
        if problem:
            raise LocalStackError(f"{self.state_path} is damaged ({problem}); `fnrelay local "
                                  "down` stops what the stack started and removes it")
        return state

    def _save(self, state: dict[str, Any]) -> None:
        write_private(private_mkdir(self.dir) / self.state_path.name, json.dumps(state, indent=2))

    def _secure_dir(self, rabbit_dir: Path) -> None:
        """The stack's directory: 0700, or 0710 with group rabbitmq when (as root) RabbitMQ,
        running as that user, keeps its data inside and must pass through. Set on every start,
        so a directory an older fnrelay left readable (0755) is closed too."""
        private_mkdir(self.dir)
        if _is_root() and rabbit_dir.parent == self.dir:
            os.chown(self.dir, -1, pwd.getpwnam(RABBITMQ_USER).pw_gid)
            os.chmod(self.dir, 0o710)
        else:
            os.chmod(self.dir, 0o700)
        for entry in self.dir.iterdir():  # the broker's database and log, among others
            st = entry.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.chmod(entry, stat.S_IMODE(st.st_mode) & 0o700)

    def up(self) -> dict[str, Any]:
        """Start everything (or nothing, if it all runs already); returns the state."""
        old = self.state()
        if old is not None:
            if all(c["running"] for c in self.status().values()):
                self.log(f"the local stack in {self.dir} is already up")
                if "db_url" in old.get("broker", {}):  # a state an older fnrelay wrote
                    old["exports"].setdefault(ENV_BROKER_DB, old["broker"]["db_url"])
                return old
            self.log("part of the previous local stack is down: restarting all of it")
            self.down()
        rabbit_dir = rabbitmq_dir_for(self.dir)
        self._secure_dir(rabbit_dir)
        marker = str(self.dir)
        prev = (old or {}).get("rabbitmq", {})
        rabbit = RabbitMQServer(rabbit_dir, prev.get("amqp_port"),
                                prev.get("dist_port"), prev.get("management_port"),
                                marker=marker, log=self.log)
        state: dict[str, Any] = {"dir": str(self.dir), "marker": marker}
        try:
            rabbit.start()
            state["rabbitmq"] = rabbit.to_dict()
            self._save(state)
            broker = BrokerServer(self.dir, rabbit.amqp_url, marker=marker, log=self.log,
                                  port=(old or {}).get("broker", {}).get("port"),
                                  management_url=rabbit.management_url).start()
            state["broker"] = {"url": broker.url, "port": broker.port, "pid": broker.pid,
                               "db_url": broker.db_url}
            self._save(state)
            token = broker.add_user(self.USER)
            endpoint = LocalEndpoint(self.home, self.ENDPOINT, broker.url, token,
                                     marker=marker, log=self.log)
            endpoint.configure().start()
            state["endpoint"] = {"name": self.ENDPOINT, "endpoint_id": endpoint.endpoint_id,
                                 "pid": endpoint.pid}
            # FNRELAY_BROKER_DB: `fnrelay-broker user add` in the shell that evaluated these
            # lines acts on this stack's broker, not on a database under FNRELAY_HOME.
            state["exports"] = {ENV_HOME: str(self.home), ENV_BROKER_URL: broker.url,
                                ENV_TOKEN: token, ENV_ENDPOINT_ID: endpoint.endpoint_id,
                                ENV_BROKER_DB: broker.db_url}
            self._save(state)
        except BaseException:
            self.log("start-up failed: stopping what was started")
            self.down()
            raise
        self.log(f"the local stack is up in {self.dir}")
        return state

    def status(self) -> dict[str, dict[str, Any]]:
        """{component: {"running": bool, ...}} for rabbitmq, broker and endpoint."""
        state = self.state() or {}
        out: dict[str, dict[str, Any]] = {}
        if "rabbitmq" in state:
            rabbit = RabbitMQServer.from_dict(state["rabbitmq"])
            out["rabbitmq"] = {"running": rabbit.running(), "pid": rabbit.pid,
                               "url": f"amqp://127.0.0.1:{rabbit.amqp_port}",
                               "management_url": rabbit.management_url}
        else:
            out["rabbitmq"] = {"running": False}
        if "broker" in state:
            b = state["broker"]
            out["broker"] = {"running": pid_alive(b["pid"]) and http_ok(f"{b['url']}/v1/version"),
                             "pid": b["pid"], "url": b["url"]}
        else:
            out["broker"] = {"running": False}
        if "exports" in state:
            ex = state["exports"]
            ep = LocalEndpoint(ex[ENV_HOME], self.ENDPOINT, ex[ENV_BROKER_URL], ex[ENV_TOKEN])
            out["endpoint"] = {"running": ep.running() and ep.status() == "online",
                               "pid": ep.pid, "endpoint_id": ex[ENV_ENDPOINT_ID],
                               "broker_status": ep.status()}
        else:
            out["endpoint"] = {"running": False}
        return out

    def down(self) -> list[int]:
        """Stop all parts, newest first; returns pids that had to be killed as leftovers.
        With a damaged state file, its processes are found by their marker instead."""
        try:
            state = self.state()
        except LocalStackError as e:
            self.log(f"{e}: stopping the processes the stack marked as its own")
            state = {"marker": str(self.dir)}
        if state is None:
            self.log(f"no local stack in {self.dir}")
            return []
        if "exports" in state or "broker" in state:
            ex = state.get("exports") or {}
            ep = LocalEndpoint(ex.get(ENV_HOME, self.home), self.ENDPOINT,
                               ex.get(ENV_BROKER_URL, ""), ex.get(ENV_TOKEN, ""), log=self.log)
            if ep.config_path.exists():
                ep.stop()
        if "broker" in state:
            BrokerServer(self.dir, "", log=self.log, pid=state["broker"]["pid"]).stop()
        if "rabbitmq" in state:
            RabbitMQServer.from_dict(state["rabbitmq"], log=self.log).stop()
        left = reap_marked(state.get("marker", str(self.dir)), self.log)
        remaining = [p for p in marked_pids(state.get("marker", str(self.dir)))
                     if _comm(p) != "epmd"]
        if remaining:
            raise LocalStackError(f"processes still running after down: {remaining}")
        self.state_path.unlink(missing_ok=True)
        self.log(f"the local stack in {self.dir} is down")
        return left


#: What each part of a state file must hold (as `up` writes it), for `_state_problem`.
_STATE_KEYS = {
    "rabbitmq": {"dir": str, "amqp_port": int, "dist_port": int, "management_port": int,
                 "admin_user": str, "admin_password": str},
    "broker": {"url": str, "port": int, "pid": int},
    "endpoint": {"endpoint_id": str, "pid": int},
    "exports": {ENV_HOME: str, ENV_BROKER_URL: str, ENV_TOKEN: str, ENV_ENDPOINT_ID: str},
}


def _state_problem(state: Any) -> str | None:
    """What is wrong with a state file's contents, or None."""
    if not isinstance(state, dict):
        return "not a JSON object"
    if not isinstance(state.get("marker", ""), str):
        return "'marker' is not text"
    for part, keys in _STATE_KEYS.items():
        if part not in state:
            continue  # written step by step: a start-up that failed leaves parts out
        if not isinstance(state[part], dict):
            return f"'{part}' is not an object"
        for key, kind in keys.items():
            value = state[part].get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"'{part}' has no {kind.__name__} '{key}'"
    return None


def exports(state: dict[str, Any]) -> str:
    """Shell lines that point the SDK, CLI and fnrelay-endpoint at the stack (values quoted)."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in state["exports"].items())


# --- CLI ----------------------------------------------------------------------------------------
def _progress(message: str) -> None:
    click.echo(message, err=True)


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except FnRelayError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None


_dir_option = click.option(
    "--dir", "dir_", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where the stack keeps its data (default: $FNRELAY_HOME/local or ~/.fnrelay/local).")


@click.group("local")
def local_cli() -> None:
    """An all-in-one stack on this machine: RabbitMQ, a broker and one endpoint."""


@local_cli.command("up")
@_dir_option
def up_cmd(dir_: Path | None) -> None:
    """Start the stack and print `export` lines for it (eval "$(fnrelay local up)")."""
    state = _run(LocalStack(dir_, log=_progress).up)
    click.echo(exports(state), nl=False)


@local_cli.command("down")
@_dir_option
def down_cmd(dir_: Path | None) -> None:
    """Stop everything the stack started."""
    _run(LocalStack(dir_, log=_progress).down)


@local_cli.command("status")
@_dir_option
def status_cmd(dir_: Path | None) -> None:
    """Show whether each part runs; exits 1 unless all of them do."""
    stack = LocalStack(dir_)
    status = _run(stack.status)
    for name, info in status.items():
        extra = "  ".join(f"{k}={v}" for k, v in info.items() if k != "running" and v)
        click.echo(f"{name:9} {'running' if info['running'] else 'stopped':8} {extra}".rstrip())
    if not all(info["running"] for info in status.values()):
        sys.exit(1)
