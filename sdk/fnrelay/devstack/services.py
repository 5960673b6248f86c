"""The broker and an endpoint as processes of the local stack, driven through their CLIs.

Secrets (the AMQP URL, tokens) reach them by their environment, which only their owner can
read, never by their command line, which every local user can.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests
import yaml

from fnrelay.amqp import requests_verify
from fnrelay.config import (
    ENV_BROKER_DB,
    ENV_BROKER_URL,
    ENV_HOME,
    ENV_TOKEN,
    private_mkdir,
    save_credentials,
    write_private,
)
from fnrelay.devstack.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    LocalStackError,
    Log,
    executable,
    free_port,
    http_ok,
    marked_env,
    port_free,
    quiet,
    spawn,
    stop_pid,
    tail,
    wait_until,
)
from fnrelay.processes import pid_alive

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
                 marker: str | None = None, log: Log = quiet, pid: int | None = None,
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
        env = marked_env(self.marker, **{ENV_HOME: str(self.dir), ENV_BROKER_DB: self.db_url,
                                          ENV_AMQP_URL: self.amqp_url})
        self.proc = spawn(argv, self.log_path, env)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise LocalStackError(
                    f"the broker exited with status {self.proc.returncode}:\n"
                    + tail(self.log_path))
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


class LocalEndpoint:
    """One endpoint NAME under FNRELAY_HOME=`home`, driven through the `fnrelay-endpoint` CLI.

    `start(foreground=True)` keeps the endpoint as a child process (tests use it to kill it);
    the default lets `fnrelay-endpoint start` put it in the background.
    """

    def __init__(self, home: Path | str, name: str, broker_url: str, token: str,
                 marker: str | None = None, log: Log = quiet):
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
        return marked_env(self.marker, **{ENV_HOME: str(self.home),
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
            if out.returncode != 0:  # its stderr has this start's warnings and errors
                raise LocalStackError(
                    f"fnrelay-endpoint start {self.name} failed: "
                    f"{(out.stderr or out.stdout).strip()}")
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
                    + tail(self.home / f"{self.name}.console.log"))
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
        if pid is not None and pid_alive(pid):
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
