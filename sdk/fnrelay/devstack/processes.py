"""Processes of the local stack: spawning, stopping, finding them by their marker, ports.

Every process the stack starts carries the environment variable FNRELAY_LOCAL_STACK=<marker>
(`marked_env`), so `marked_pids` finds all of them, worker pools and Erlang helpers included,
by scanning /proc, and `reap_marked` can prove that nothing survives a `down`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from fnrelay.config import ENV_LOCAL_STACK, private_mkdir
from fnrelay.errors import FnRelayError
from fnrelay.processes import pid_alive

START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

Log = Callable[[str], None]


class LocalStackError(FnRelayError):
    """The local stack could not be started, stopped or inspected."""


def quiet(_: str) -> None:
    """The Log of a part started without one: it says nothing."""


#: Linux's file of the range it gives outgoing connections their local ports from.
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The lowest port `free_port` offers: above the registered services most machines run.
LOWEST = 15000
_RANDOM = random.SystemRandom()  # not the global one, whose state tests may seed


def free_port(exclude: Iterable[int] = ()) -> int:
    """A TCP port that is free on 127.0.0.1 now and not in `exclude`, for a server that binds
    it a moment later. It lies below the kernel's ephemeral range when there is room: a port
    from that range may meanwhile become some outgoing connection's local port, and then the
    server cannot bind it (or a restarted RabbitMQ node comes back on another port)."""
    taken = set(exclude)
    low, high = _server_port_range()
    for _ in range(200):
        if high > low:
            port = _RANDOM.randint(low, high)
            if port in taken or not port_free(port):
                continue
            return port
        with socket.socket() as s:  # no room below the range: the kernel's choice
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
    raise LocalStackError("could not find a free TCP port")


def _server_port_range() -> tuple[int, int]:
    """From LOWEST to just below the ephemeral range (Linux's default starts at 32768)."""
    try:
        first = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return LOWEST, first - 1


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


def stop_pid(pid: int | None, timeout: float = STOP_TIMEOUT, group: bool = False) -> None:
    """SIGTERM `pid` (or its process group), then SIGKILL if it is still there after `timeout`."""
    if pid is None or not pid_alive(pid):
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
    needle = f"{ENV_LOCAL_STACK}={marker}\0".encode()
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


def comm(pid: int) -> str:
    """The command name of `pid` ("" once it is gone), to spare epmd and to name leftovers."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def reap_marked(marker: str, log: Log = quiet, grace: float = 10.0) -> list[int]:
    """Kill what is left of the processes carrying `marker` after `grace` seconds (wrappers exit
    a moment after what they wrap); returns the pids that had to be killed.

    epmd (Erlang's port mapper, started by the first Erlang node) is left alone while other
    Erlang nodes still use it, and not waited for: a daemon, it never exits by itself.
    """
    def left_over() -> list[int]:
        return [p for p in marked_pids(marker) if comm(p) != "epmd" or not _epmd_in_use()]

    def exiting() -> list[int]:
        return [p for p in marked_pids(marker) if comm(p) != "epmd"]

    try:
        wait_until(lambda: not exiting(), "processes to exit", grace, 0.1)
    except LocalStackError:
        pass
    left = left_over()
    for pid in left:
        log(f"killing leftover process {pid} ({comm(pid)})")
        stop_pid(pid, timeout=5)
    return left


def _epmd_in_use() -> bool:
    epmd = shutil.which("epmd") or "epmd"
    try:
        out = subprocess.run([epmd, "-names"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "name " in out.stdout


def marked_env(marker: str, **extra: str) -> dict[str, str]:
    return {**os.environ, ENV_LOCAL_STACK: marker, **extra}


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` of a process's log, for an error saying why it did not start."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
