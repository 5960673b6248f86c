"""A local worker on another Python than the endpoint's: ``PYTHON -m
fnrelay_endpoint.engines.local.foreign FD``, talking over the socket FD with the pickles the
forkserver's workers use. multiprocessing starts every process of a context from one
executable, so a pool per interpreter starts its workers itself.

The worker's environment must hold fnrelay (and so this module) and dill; the endpoint's
PYTHONPATH is not passed on, as it names modules installed for the endpoint's own version.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from fnrelay_endpoint.engines.interpreters import foreign_env


class ForeignProcess:
    """A started worker, with what the pool uses of a multiprocessing.Process."""

    def __init__(self, popen: subprocess.Popen[bytes]):
        self._popen = popen
        self.pid = popen.pid

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def start(python: str, settings: Any) -> tuple[Connection, ForeignProcess]:
    """Start a worker on `python`, send it its settings; the pipe and the process."""
    ours, theirs = socket.socketpair()
    try:
        popen = subprocess.Popen([python, "-m", __name__, str(theirs.fileno())],
                                 pass_fds=[theirs.fileno()], env=foreign_env(),
                                 stdin=subprocess.DEVNULL)
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    try:
        conn.send(settings)
    except OSError:  # it died at once (e.g. no fnrelay there): the ready wait reports it
        pass
    return conn, ForeignProcess(popen)


def main(argv: list[str]) -> None:
    from fnrelay_endpoint.engines.local.engine import _worker_main

    conn = Connection(int(argv[1]))
    _worker_main(conn, conn.recv())


if __name__ == "__main__":
    main(sys.argv)
