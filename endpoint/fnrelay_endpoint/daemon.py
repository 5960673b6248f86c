"""Run an endpoint in the foreground, or detached in the background, and stop it.

`start` in the background re-runs this program with --foreground in a new session, logging
to endpoint.log, and reports success only once the child has registered and is consuming
(the child creates endpoint.ready then).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fnrelay import logformat
from fnrelay.errors import FnRelayError
from fnrelay.processes import pid_alive
from fnrelay_endpoint import registration
from fnrelay_endpoint.config.model import EndpointConfig, EndpointPaths
from fnrelay_endpoint.startlog import StartLog

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
#: The endpoint's log level (the CLI's --log-level sets it for the processes it starts).
ENV_LOG_LEVEL = "FNRELAY_LOG_LEVEL"
STOP_TIMEOUT = 60.0


class StartError(FnRelayError):
    """The background endpoint did not become ready."""


def running_pid(paths: EndpointPaths) -> int | None:
    """The pid of the endpoint's agent if it runs, else None (a stale pid file is ignored)."""
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _setup_logging(logfile: Path) -> None:
    """endpoint.log (and a terminal, if any), in FNRELAY_LOG_FORMAT at FNRELAY_LOG_LEVEL:
    the CLI's options set both, so the background agent started from it inherits them."""
    handlers: list[logging.Handler] = [logging.FileHandler(logfile)]
    if sys.stderr.isatty():
        handlers.append(logging.StreamHandler())
    logformat.configure(handlers, os.environ.get(ENV_LOG_LEVEL, "INFO").upper())


def run_foreground(name: str) -> None:
    """Run the agent in this process until SIGTERM/SIGINT."""
    from fnrelay_endpoint.agent.agent import Agent
    from fnrelay_endpoint.agent.journal import Journal

    paths = EndpointPaths.of(name).require()
    config = EndpointConfig.load(paths.config)
    token = config.resolved_token()
    endpoint_id = registration.ensure_id(paths, config.broker_url, token,
                                         config.display_name or name, {})
    other = running_pid(paths)
    if other and other != os.getpid():
        raise FnRelayError(f"endpoint {name!r} is already running (pid {other})")
    _setup_logging(paths.log)
    logformat.for_process(endpoint_id=endpoint_id)
    paths.ready.unlink(missing_ok=True)
    paths.pid.write_text(f"{os.getpid()}\n")
    journal = Journal(paths.journal)
    agent = Agent(name, endpoint_id, config, journal, token)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    log.info("starting endpoint %s (%s), pid %d", name, endpoint_id, os.getpid())
    try:
        agent.run(on_ready=paths.ready.touch)
    except FnRelayError as e:
        log.error("endpoint %s failed: %s", name, e)
        raise
    finally:
        journal.close()
        paths.ready.unlink(missing_ok=True)
        if running_pid(paths) == os.getpid():
            paths.pid.unlink(missing_ok=True)


def start_background(name: str, timeout: float = START_TIMEOUT,
                     report: Callable[[str], None] | None = None) -> int:
    """Start the endpoint detached; returns its pid once it consumes, else raises StartError.
    Meanwhile `report` gets this start's warnings and errors as the endpoint logs them;
    without it, the error holds this start's log lines."""
    paths = EndpointPaths.of(name).require()
    config = EndpointConfig.load(paths.config)
    token = config.resolved_token()  # config and token errors show here, and the broker's
    registration.ensure_id(paths, config.broker_url, token, config.display_name or name, {})
    pid = running_pid(paths)
    if pid:
        raise FnRelayError(f"endpoint {name!r} is already running (pid {pid})")
    paths.ready.unlink(missing_ok=True)
    started = StartLog(paths.log, report)
    with paths.log.open("ab") as logf:
        child = subprocess.Popen(
            [sys.executable, "-m", "fnrelay_endpoint", "start", name, "--foreground"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            cwd=paths.dir,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started.relay()
        if paths.ready.exists():
            return child.pid
        if child.poll() is not None:
            break
        time.sleep(0.1)
    else:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    raise StartError(started.failed(name))


def stop(name: str, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM the endpoint and wait for it to exit; returns its pid, or None if not running."""
    paths = EndpointPaths.of(name).require()
    pid = running_pid(paths)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            log.warning("endpoint %s (pid %d) ignored SIGTERM; killing it", name, pid)
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    paths.pid.unlink(missing_ok=True)
    paths.ready.unlink(missing_ok=True)
    return pid
