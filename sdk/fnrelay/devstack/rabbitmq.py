"""A private RabbitMQ node for the local stack and the tests, and the rules for its directory.

The node is its owner's alone: it has no guest account (on 127.0.0.1 every local user would be
guest), its administrator's random password is kept in a 0600 file, and its directory is 0700.
Run as root, RabbitMQ runs as the rabbitmq user (it refuses root), so the directory becomes
that user's, and is refused if another account made it first.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import secrets
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from fnrelay.config import private_mkdir, write_private
from fnrelay.devstack.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    LocalStackError,
    Log,
    free_port,
    http_ok,
    marked_env,
    port_free,
    quiet,
    spawn,
    stop_pid,
    wait_until,
)
from fnrelay.processes import pid_alive

RABBITMQ_BIN = Path(os.environ.get("FNRELAY_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
RABBITMQ_USER = "rabbitmq"


def is_root() -> bool:
    """As root, RabbitMQ runs as the rabbitmq user (it refuses root) and owns its directory."""
    return os.geteuid() == 0


def _as_rabbitmq(argv: list[str], env: dict[str, str]) -> list[str]:
    """`argv` with `env`, run as the rabbitmq user when we are root (it refuses to run as root).

    The /usr/sbin wrappers reset the environment, so the real scripts are called through `env`.
    """
    assignments = [f"{k}={v}" for k, v in env.items()]
    if is_root():
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
                 marker: str | None = None, log: Log = quiet,
                 tls: tuple[str, str, str] | None = None, cookie: str | None = None):
        self.dir = Path(dir).resolve()
        #: The Erlang cookie (None: the node makes its own): nodes of a cluster share one.
        self.cookie = cookie
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
    def from_dict(cls, d: dict[str, Any], log: Log = quiet) -> RabbitMQServer:
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

    def _choose_ports(self, exclude: Iterable[int] = ()) -> None:
        taken: list[int] = list(exclude)
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
        if self.cookie is not None:  # a cluster's nodes must share it
            cookie = self.dir / ".erlang.cookie"
            write_private(cookie, self.cookie)
            cookie.chmod(0o400)
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
        if is_root():
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
        self.launch()
        return self.wait_ready(timeout)

    def launch(self, exclude: Iterable[int] = ()) -> None:
        """Start the node's VM without waiting for it: a cluster's nodes restarted on kept
        data each wait for the others, so they must boot side by side."""
        server = RABBITMQ_BIN / "rabbitmq-server"
        if not server.exists():
            raise LocalStackError(
                f"RabbitMQ is not installed ({server} is missing): run "
                "`apt-get install rabbitmq-server` (or `make deps` as root)")
        self._choose_ports(exclude)
        self._prepare_dir()
        self.log(f"starting RabbitMQ node {self.nodename} (AMQP port {self.amqp_port}, "
                 f"management port {self.management_port}) in {self.dir}")
        argv = _as_rabbitmq([str(server)], self._env())
        self.proc = spawn(argv, self.dir / "server.out", marked_env(self.marker))

    def wait_ready(self, timeout: float = START_TIMEOUT) -> RabbitMQServer:
        """Wait until the launched node answers, then make sure of its accounts."""
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

    def kill(self) -> None:
        """SIGKILL the Erlang VM: a crash, with no goodbye to clients or peers (chaos tests),
        or the quick end of a node whose data is thrown away next."""
        pid = self.pid
        if pid is None or not pid_alive(pid):
            raise LocalStackError(f"node {self.nodename} is not running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), f"{self.nodename} to die", 10, 0.05)
        if self.proc is not None:
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
    if is_root():
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
    if not is_root() or _reachable_by_others(wanted.parent.parent):
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    path = Path("/tmp") / f"fnrelay-rabbitmq-{digest}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    _refuse_foreign_dir(path)
    return path


def _reachable_by_others(path: Path) -> bool:
    """A directory not made yet counts as closed: private_mkdir will create it 0700."""
    for p in [path, *path.parents]:
        if not p.exists() or not p.stat().st_mode & 0o001:
            return False
    return True


def make_shared_tmpdir(prefix: str) -> Path:
    """A fresh directory under /tmp that the rabbitmq user can enter (mkdtemp makes 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path
