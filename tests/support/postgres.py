"""A real PostgreSQL server in a temp dir, for tests of the broker on PostgreSQL.

Recipe (Debian: `apt-get install postgresql`; the packaged cluster is not used):

1. A fresh temp dir that the `postgres` user owns (PostgreSQL refuses to run as root, so as
   root every command runs as `postgres` through `runuser`; as another user, as that user).
2. `initdb` with a random superuser password (scram-sha-256 on TCP, trust on the unix socket).
3. `pg_ctl start -w` with the server listening on 127.0.0.1 at a free port and its unix socket
   in the temp dir; fsync off (a test server need not survive a power cut).
4. `create_database()` makes an empty database per test module/test and returns its URL.
5. `stop()`: `pg_ctl stop -m fast -w`, so nothing is left running; the dir is then removed.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from fnrelay.devstack.processes import free_port

APT_PACKAGE = "postgresql"


class PostgresError(RuntimeError):
    """The server could not be set up; the message holds the tool's output or log tail."""


def bindir() -> Path:
    """The newest installed server's bin dir (Debian keeps initdb/pg_ctl off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise PostgresError(f"PostgreSQL is not installed: apt-get install {APT_PACKAGE}")


class PostgresServer:
    """One PostgreSQL cluster under `root` (a new temp dir when None)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="fnpg-")).resolve()
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.user = "postgres"
        self.password = secrets.token_hex(16)
        self.bin = bindir()
        self.as_root = os.geteuid() == 0
        self.started = False

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{database}")

    def _run(self, tool: str, *args: str) -> str:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if out.returncode != 0:
            raise PostgresError(f"{tool} failed ({out.returncode}): {out.stderr or out.stdout}"
                                f"\n{self._log_tail()}")
        return out.stdout

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(self.root, 0o700)
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            for p in (self.socket_dir, pwfile):
                shutil.chown(p, "postgres", "postgres")
        else:
            self.user = os.environ.get("USER") or "postgres"
        self._run("initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--no-instructions")
        pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        self.started = True
        return self

    def create_database(self, name: str | None = None) -> str:
        """An empty new database; returns its SQLAlchemy URL."""
        name = name or f"fnrelay_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", str(self.socket_dir), "-p", str(self.port),
                  "-U", self.user, name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and wait for it."""
        if self.started:
            self.started = False
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
        except (OSError, ValueError):
            return False
        return True
