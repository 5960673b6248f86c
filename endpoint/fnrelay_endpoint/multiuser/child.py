"""A multi-user endpoint's child: one normal endpoint agent for one (user, config).

The manager starts ``python -m fnrelay_endpoint.multiuser.child`` already switched to the
mapped account and writes a bootstrap JSON object to its stdin: the user's config, the site's
template and schema, and the AMQP URL (credentials never travel in argv or the environment).
The child checks it cannot get root back *before* it renders or runs anything, renders its
config into its own FNRELAY_HOME, runs the agent, and stops itself after `idle_timeout`
seconds without tasks. It reports to the manager with JSON lines on stdout: {"ready": true},
{"error": ...}, {"stopped": "idle"}.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fnrelay import logformat
from fnrelay.errors import FnRelayError
from fnrelay.wire import ResultMessage, TaskMessage
from fnrelay_endpoint.agent.agent import Agent
from fnrelay_endpoint.config.model import EndpointConfig, EndpointPaths
from fnrelay_endpoint.daemon import ENV_LOG_LEVEL
from fnrelay_endpoint.multiuser import usertemplate
from fnrelay_endpoint.multiuser.identity import LocalAccount, drop_privileges, ensure_unprivileged

log = logging.getLogger(__name__)

#: Exit status of a child that refused to run (it reported {"error": ...} first).
EXIT_REFUSED = 3


class _Activity:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()

    def begin(self) -> None:
        with self.lock:
            self.active += 1
            self.last = time.monotonic()

    def end(self) -> None:
        with self.lock:
            self.active = max(0, self.active - 1)
            self.last = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.active else time.monotonic() - self.last


class ChildAgent(Agent):
    """An Agent that needs no REST token: its record exists at the broker (made at submit) and
    its AMQP URL came on stdin."""

    def __init__(self, name: str, endpoint_id: str, config: EndpointConfig, journal: Any,
                 amqp_url: str, task_queue: str, heartbeat_period: float):
        super().__init__(name, endpoint_id, config, journal, token="")
        self._task_queue = task_queue
        self.activity = _Activity()  # tasks in flight, for idleness (whatever the engine)
        self._amqp_url, self._hb = amqp_url, heartbeat_period

    def register(self, attempts: int | None = None) -> dict[str, Any]:
        return {"endpoint_id": self.endpoint_id, "amqp_url": self._amqp_url,
                "task_queue": self._task_queue,
                "heartbeat_period": self._hb}

    def _start_task(self, task: TaskMessage, failures: int = 0) -> None:
        self.activity.begin()
        super()._start_task(task, failures)

    def _result_ready(self, result: ResultMessage) -> None:
        self.activity.end()
        super()._result_ready(result)


def report(**message: Any) -> None:
    """One JSON line to the manager."""
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # the manager is gone; nothing to tell


def run_worker_init(script: str, log_path: Path) -> None:
    """Run `script` with /bin/sh and adopt the environment it exports (conda, modules)."""
    with log_path.open("ab") as logf:
        out = subprocess.run(["/bin/sh", "-c", f"{{\n{script}\n}} >&2\nexec env -0"],
                             stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise usertemplate.UserConfigError(
            f"worker_init failed with exit status {out.returncode} (see {log_path})")
    for item in out.stdout.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep and key:
            os.environ[key] = value


def prepare(boot: dict[str, Any]) -> tuple[EndpointPaths, EndpointConfig]:
    """Drop/check privileges, then render and write this child's endpoint directory."""
    account = boot["account"]
    if os.geteuid() == 0:
        drop_privileges(LocalAccount.of(account["name"]))
    ensure_unprivileged(int(account["uid"]))
    home = Path(boot.get("fnrelay_home") or Path(account["home"]) / ".fnrelay")
    os.environ["FNRELAY_HOME"] = str(home)
    text, config, env, init = usertemplate.render(
        boot["template"], boot["schema"], boot["user_endpoint_config"], boot["context"],
        boot["broker_url"], boot.get("gc"), boot.get("template_dialect", "fnrelay"))
    paths = EndpointPaths(boot["name"], home / "endpoints" / boot["name"])
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chdir(paths.dir)
    header = (f"# Rendered by the multi-user endpoint {boot['context']['endpoint_name']!r} for "
              f"broker user {boot['context']['user']!r}; regenerated at every start.\n")
    paths.config.write_text(header + text)
    paths.identity.write_text(json.dumps({"endpoint_id": boot["child_id"],
                                          "parent": boot["context"]["manager_id"]}) + "\n")
    os.environ.update({**boot.get("site_environment", {}), **env})
    if init:
        run_worker_init(init, paths.log)
    return paths, config


def _setup_logging(path: Path) -> None:
    """The child's log, in its manager's format and level (inherited environment)."""
    logformat.configure([logging.FileHandler(path)],
                        os.environ.get(ENV_LOG_LEVEL, "INFO").upper())


def main() -> int:
    try:
        boot = json.loads(sys.stdin.readline())
        sys.stdin.close()
    except ValueError as e:
        report(error=f"bad bootstrap from the manager: {e}")
        return EXIT_REFUSED
    try:
        paths, config = prepare(boot)
    except (FnRelayError, OSError) as e:
        report(error=str(e))
        return EXIT_REFUSED
    from fnrelay_endpoint.agent.journal import Journal

    _setup_logging(paths.log)
    logformat.for_process(endpoint_id=boot["child_id"])
    paths.pid.write_text(f"{os.getpid()}\n")
    journal = Journal(paths.journal)
    agent = ChildAgent(boot["name"], boot["child_id"], config, journal, boot["amqp_url"],
                       boot["task_queue"], float(boot.get("heartbeat_period") or 10.0))
    idle_timeout = float(boot.get("idle_timeout") or 600)
    went_idle = threading.Event()

    def watch_idle() -> None:
        while not agent._stop.wait(1.0):
            if agent.activity.idle_for() >= idle_timeout:
                log.info("idle for %.0f s: stopping", idle_timeout)
                went_idle.set()
                agent.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    threading.Thread(target=watch_idle, name="idle-watch", daemon=True).start()
    log.info("child endpoint %s (%s) of user %s, pid %d", boot["name"], boot["child_id"],
             boot["context"]["user"], os.getpid())
    try:
        agent.run(on_ready=lambda: report(ready=True))
    except FnRelayError as e:
        report(error=str(e))
        return EXIT_REFUSED
    finally:
        journal.close()
        paths.pid.unlink(missing_ok=True)
    if went_idle.is_set():
        report(stopped="idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
