"""`fnrelay gc-proxy` as a test process: started on a port, stopped at the end."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fnrelay.devstack.processes import executable, port_free, spawn, stop_pid, tail
from support.file_lock import file_lock
from support.waiting import wait_for

#: The official SDK reaches a self-hosted service only here (GLOBUS_SDK_ENVIRONMENT=local).
GC_PORT = 5000
#: Held while a test module's service owns GC_PORT (tests/support/workers.py keeps those
#: modules on one worker within a run; this makes two runs on one machine take turns).
PORT_LOCK = Path("/tmp/fnrelay-gc-port-5000.lock")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def gc_proxy(broker_url: str, port: int, log: Path, ca_bundle: str | None = None,
             env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`fnrelay gc-proxy --broker-url ... --port ...` running until the block ends."""
    argv = [executable("fnrelay"), "gc-proxy", "--broker-url", broker_url, "--port", str(port)]
    if ca_bundle:
        argv += ["--ca-bundle", ca_bundle]
    proc = spawn(argv, log, {**os.environ, **(env or {})})
    try:
        wait_for(lambda: listening(port) or proc.poll() is not None, "fnrelay gc-proxy")
        assert proc.poll() is None, tail(log)
        yield proc
    finally:
        stop_pid(proc.pid)
        proc.wait()


@contextmanager
def holding_gc_port() -> Iterator[int]:
    """GC_PORT, free, for the caller alone while the block runs: another test run's module
    that owns it is waited out."""
    with file_lock(PORT_LOCK):
        wait_for(lambda: port_free(GC_PORT),
                 f"port {GC_PORT} to be free (the official packages reach only that port)")
        yield GC_PORT
