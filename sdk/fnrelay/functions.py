"""Shell and MPI commands as functions.

A ShellFunction is a plain callable object: it is registered and submitted like any function,
and endpoints import this module by reference to run it. The command runs with ``bash -c`` in
the caller's process group, so an endpoint that kills a task's process group kills the command
too.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import string
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, overload

from fnrelay.wire.names import ENV_MPI_PREFIX, ENV_NUM_RANKS

#: Exit status of a command killed for exceeding its walltime (as coreutils `timeout`).
TIMEOUT_RETURNCODE = 124

_HMS = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})$")


@overload
def parse_walltime(walltime: int | str) -> int: ...
@overload
def parse_walltime(walltime: None) -> None: ...
def parse_walltime(walltime: int | str | None) -> int | None:
    """Seconds from an int (seconds) or an "HH:MM:SS" string; None means no limit."""
    if walltime is None:
        return None
    if isinstance(walltime, bool):
        raise ValueError(f"walltime must be seconds (int) or 'HH:MM:SS', not {walltime!r}")
    if isinstance(walltime, int):
        if walltime <= 0:
            raise ValueError(f"walltime must be a positive number of seconds, not {walltime}")
        return walltime
    if isinstance(walltime, str):
        m = _HMS.match(walltime.strip())
        if not m:
            raise ValueError(f"walltime {walltime!r} is not in the form 'HH:MM:SS'")
        hours, minutes, seconds = (int(g) for g in m.groups())
        if minutes >= 60 or seconds >= 60:
            raise ValueError(f"walltime {walltime!r}: minutes and seconds must be below 60")
        total = hours * 3600 + minutes * 60 + seconds
        if total <= 0:
            raise ValueError(f"walltime {walltime!r} must be longer than zero")
        return total
    raise ValueError(f"walltime must be seconds (int) or 'HH:MM:SS', not {walltime!r}")


@dataclass
class ShellResult:
    """What a shell command did: its exit status and the tail of its output."""

    cmd: str
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return self.stdout


class _QuotingFormatter(string.Formatter):
    """str.format that shell-quotes every substituted value (format specs still apply)."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return shlex.quote(super().format_field(value, format_spec))


class ShellFunction:
    """Run ``cmd`` (formatted with the call's keyword arguments) with bash.

    Substituted values are shell-quoted, so ``ShellFunction("ls {path}")(path="a b")`` lists
    one directory named ``a b``. Returns a ShellResult with the last ``snippet_lines`` lines of
    stdout and stderr. With ``walltime`` (seconds or "HH:MM:SS") a command that runs longer is
    killed and the result has returncode 124.
    """

    def __init__(self, cmd: str, walltime: int | str | None = None, snippet_lines: int = 1000):
        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError("cmd must be a non-empty command string")
        if not isinstance(snippet_lines, int) or snippet_lines < 0:
            raise ValueError(f"snippet_lines must be a non-negative int, not {snippet_lines!r}")
        self.cmd = cmd
        self.walltime = walltime
        self.timeout = parse_walltime(walltime)
        self.snippet_lines = snippet_lines
        self.__name__ = type(self).__name__  # registered like a function

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cmd!r}, walltime={self.walltime!r})"

    def format_command(self, **kwargs: Any) -> str:
        """The command line this call runs."""
        try:
            return _QuotingFormatter().format(self.cmd, **kwargs)
        except KeyError as e:
            raise ValueError(f"command {self.cmd!r} needs keyword argument {e.args[0]!r}") from e
        except IndexError as e:
            raise ValueError(
                f"command {self.cmd!r} has a positional field; use named fields like {{name}}"
            ) from e

    def __call__(self, **kwargs: Any) -> ShellResult:
        return run_command(self.format_command(**kwargs), self.timeout, self.snippet_lines)


class MPIFunction(ShellFunction):
    """A ShellFunction launched with MPI.

    The launcher comes from ``$FNRELAY_MPI_PREFIX`` (set by engines that know the allocation);
    without it, ``mpiexec -n $FNRELAY_NUM_RANKS`` (default 1 rank).
    """

    def format_command(self, **kwargs: Any) -> str:
        return f"{mpi_prefix()} {super().format_command(**kwargs)}"


def mpi_prefix() -> str:
    """The MPI launcher for this process's environment."""
    prefix = os.environ.get(ENV_MPI_PREFIX, "").strip()
    if prefix:
        return prefix
    raw = os.environ.get(ENV_NUM_RANKS, "1")
    try:
        ranks = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_NUM_RANKS}={raw!r} is not an integer") from None
    if ranks < 1:
        raise ValueError(f"{ENV_NUM_RANKS}={ranks} must be at least 1")
    return f"mpiexec -n {ranks}"


def run_command(cmd: str, timeout: float | None, snippet_lines: int) -> ShellResult:
    """Run ``bash -c cmd``, keeping only the output's tail in memory."""
    proc = subprocess.Popen(
        ["bash", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tails: list[deque[str]] = [deque(maxlen=snippet_lines), deque(maxlen=snippet_lines)]
    readers = [
        threading.Thread(target=_drain, args=(stream, tail), daemon=True)
        for stream, tail in zip((proc.stdout, proc.stderr), tails, strict=True)
    ]
    for r in readers:
        r.start()
    timed_out = False
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(proc.pid)
        proc.wait()
        returncode = TIMEOUT_RETURNCODE
    except BaseException:  # e.g. KeyboardInterrupt: never leave the command behind
        _kill_tree(proc.pid)
        proc.wait()
        raise
    for r in readers:
        r.join(timeout=5)  # a stray grandchild may hold a pipe open; don't wait for it
    stdout, stderr = ("".join(tail) for tail in tails)
    if timed_out:
        stderr += f"\nfnrelay: command exceeded its walltime of {timeout} s and was killed\n"
    return ShellResult(cmd=cmd, returncode=returncode, stdout=stdout, stderr=stderr)


def _drain(stream: IO[bytes], tail: deque[str]) -> None:
    with stream:
        for line in stream:
            tail.append(line.decode(errors="replace"))


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc); empty where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (they share our process group, so not killpg)."""
    stack, seen = [pid], []
    while stack:
        p = stack.pop()
        try:
            os.kill(p, signal.SIGSTOP)  # freeze it so it cannot fork while we look
        except ProcessLookupError:
            continue
        seen.append(p)
        stack.extend(_children(p))
    for p in seen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
