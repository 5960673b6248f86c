"""Shell and MPI commands as functions.

A ShellFunction is a plain callable object: it is registered and submitted like any function,
and endpoints import this module by reference to run it. The command runs with ``bash -c`` in
the caller's process group, so an endpoint that kills a task's process group kills the command
too.
"""

from __future__ import annotations

import keyword
import math
import os
import re
import shlex
import signal
import string
import subprocess
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import IO, Any, overload

from fnrelay.mpi_launch import launch_error
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


def command_walltime(walltime: float | str | None) -> float | None:
    """A ShellFunction's limit in seconds: a positive number (Globus Compute's float seconds)
    or "HH:MM:SS"; None means no limit."""
    if isinstance(walltime, float):
        if not math.isfinite(walltime) or walltime <= 0:
            raise ValueError(f"walltime must be a positive number of seconds, not {walltime}")
        return walltime
    return parse_walltime(walltime)


@dataclass
class ShellResult:
    """What a shell command did: its exit status and the tail of its output.

    The fields and their order are Globus Compute's, so code that reads or builds one keeps
    working. ``exception_name`` says why it failed ("subprocess.CalledProcessError" for a
    non-zero exit, "subprocess.TimeoutExpired" past its walltime), None when it succeeded.
    """

    cmd: str
    stdout: str
    stderr: str
    returncode: int
    exception_name: str | None = None

    def __str__(self) -> str:
        """A short report as Globus Compute prints it: the exit code and the last lines of
        stdout; on failure also of stderr and the exception's name."""
        text = f"exit code: {self.returncode}\n   stdout:\n{_last_lines(self.stdout, 'stdout')}"
        if self.returncode != 0:
            text += f"\n\n   stderr:\n{_last_lines(self.stderr, 'stderr')}"
            if self.exception_name:
                text += f"\n\nexception: {self.exception_name}"
        return text


def _last_lines(output: str, stream: str, lines: int = 10, chars: int = 1024) -> str:
    """At most the last `lines` lines of `output` within its last `chars` characters, saying
    so when something was left out (the full text stays in the attribute)."""
    whole = output.lstrip("\n").rstrip()
    tail = "\n".join(whole[-chars:].splitlines()[-lines:])
    if tail != whole:
        tail = f"[... truncated; see .{stream} for full output ...]\n{tail}"
    return tail


class _QuotingFormatter(string.Formatter):
    """str.format that shell-quotes every substituted value (format specs still apply)."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return shlex.quote(super().format_field(value, format_spec))


class ShellFunction:
    """Run ``cmd`` (formatted with the call's keyword arguments) with bash.

    As in Globus Compute, values are inserted as written: ``ShellFunction("ls {flags} /")``
    called with ``flags="-d -a"`` runs ``ls -d -a /``, so a value can carry several words or
    any shell syntax. When a value comes from anyone you would not let type into your shell
    (a web form, a file you were sent, a Harvester worker's attributes), pass
    ``quote_values=True``: each value is then shell-quoted and always one word, so
    ``path="a b; rm -rf ~"`` names one odd file instead of running ``rm``.

    Returns a ShellResult (a dict of its fields with ``return_dict=True``) with the last
    ``snippet_lines`` lines of stdout and stderr. ``stdout`` and ``stderr`` name files (relative
    to the task's working directory) that the output is appended to; the snippet is then that
    file's tail. With ``walltime`` (seconds, or "HH:MM:SS") a command that runs longer is
    killed with all its processes and the result has returncode 124. ``name`` is the name it
    is registered under (a Python identifier; default "ShellFunction").
    """

    def __init__(self, cmd: str, stdout: str | None = None, stderr: str | None = None,
                 walltime: float | str | None = None, snippet_lines: int = 1000,
                 name: str | None = None, return_dict: bool = False, *,
                 quote_values: bool = False):
        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError("cmd must be a non-empty command string")
        if not isinstance(snippet_lines, int) or snippet_lines < 0:
            raise ValueError(f"snippet_lines must be a non-negative int, not {snippet_lines!r}")
        for label, path in (("stdout", stdout), ("stderr", stderr)):
            if path is not None and (not isinstance(path, str) or not path):
                raise ValueError(f"{label} must be a file path or None, not {path!r}")
        name = type(self).__name__ if name is None else name
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"name must be a valid Python function name, not {name!r}")
        self.cmd = cmd
        self.stdout, self.stderr = stdout, stderr
        self.walltime = walltime
        self.timeout = command_walltime(walltime)
        self.snippet_lines = snippet_lines
        self.return_dict = return_dict
        self.quote_values = quote_values
        self.__name__ = name  # registered like a function

    def __repr__(self) -> str:
        parts = [repr(self.cmd)]
        if self.__name__ != type(self).__name__:
            parts.append(f"name={self.__name__!r}")
        for attr in ("stdout", "stderr", "walltime"):
            if getattr(self, attr) is not None:
                parts.append(f"{attr}={getattr(self, attr)!r}")
        if self.quote_values:
            parts.append("quote_values=True")
        return f"{type(self).__name__}({', '.join(parts)})"

    def format_command(self, **kwargs: Any) -> str:
        """The command line this call runs."""
        formatter = _QuotingFormatter() if self.quote_values else string.Formatter()
        try:
            return formatter.format(self.cmd, **kwargs)
        except KeyError as e:
            raise ValueError(f"command {self.cmd!r} needs keyword argument {e.args[0]!r}") from e
        except IndexError as e:
            raise ValueError(
                f"command {self.cmd!r} has a positional field; use named fields like {{name}}"
            ) from e

    def __call__(self, **kwargs: Any) -> ShellResult | dict[str, Any]:
        result = run_command(self.format_command(**kwargs), self.timeout, self.snippet_lines,
                             stdout=self.stdout, stderr=self.stderr)
        return asdict(result) if self.return_dict else result


class MPIFunction(ShellFunction):
    """A ShellFunction launched with MPI, with Globus Compute's resource specification
    (``{"num_nodes": 2, "ranks_per_node": 2}``, or ``{"num_ranks": 4}`` on one node).

    The launcher comes from ``$FNRELAY_MPI_PREFIX``, which the endpoint sets for a task with
    an MPI layout (and exports as ``$PARSL_MPI_PREFIX`` too, so a command written for Globus
    Compute's MPIFunction runs); without it, ``mpiexec -n $FNRELAY_NUM_RANKS`` (default 1).
    The result's ``cmd`` is the command with the launcher written out. The program's exit
    status is its result; a launcher that starts no rank (OpenMPI as root, too few slots, no
    launcher) raises ``MPILaunchError`` with its own error instead.
    """

    def format_command(self, **kwargs: Any) -> str:
        return f"{mpi_prefix()} {super().format_command(**kwargs)}"

    def __call__(self, **kwargs: Any) -> ShellResult | dict[str, Any]:
        prefix = mpi_prefix()
        result = run_command(self.format_command(**kwargs), self.timeout, self.snippet_lines,
                             stdout=self.stdout, stderr=self.stderr)
        error = launch_error(prefix, result.returncode, result.stderr)
        if error is not None:
            raise error
        return asdict(result) if self.return_dict else result


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


def run_command(cmd: str, timeout: float | None, snippet_lines: int,
                stdout: str | None = None, stderr: str | None = None) -> ShellResult:
    """Run ``bash -c cmd``, keeping only the output's tail in memory; `stdout` and `stderr`
    name files the output is appended to instead (the tails are then read from them)."""
    files = [_open_output(stdout), _open_output(stderr)]
    try:
        proc = subprocess.Popen(
            ["bash", "-c", cmd], stdin=subprocess.DEVNULL,
            stdout=files[0] or subprocess.PIPE, stderr=files[1] or subprocess.PIPE,
        )
    finally:
        for f in files:
            if f is not None:
                f.close()  # the child has its own copy
    tails: list[deque[str]] = [deque(maxlen=snippet_lines), deque(maxlen=snippet_lines)]
    readers = [
        threading.Thread(target=_drain, args=(stream, tail), daemon=True)
        for stream, tail in zip((proc.stdout, proc.stderr), tails, strict=True)
        if stream is not None
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
    for path, tail in zip((stdout, stderr), tails, strict=True):
        if path is not None:
            _read_tail(path, tail)
    out, err = ("".join(tail) for tail in tails)
    exception_name = None
    if timed_out:
        err += f"\nfnrelay: command exceeded its walltime of {timeout} s and was killed\n"
        exception_name = "subprocess.TimeoutExpired"
    elif returncode != 0:
        exception_name = "subprocess.CalledProcessError"
    return ShellResult(cmd=cmd, stdout=out, stderr=err, returncode=returncode,
                       exception_name=exception_name)


def _open_output(path: str | None) -> IO[bytes] | None:
    """The file a stream is appended to (its directory made if missing), or None."""
    if path is None:
        return None
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    return open(path, "ab")  # noqa: SIM115 - closed once the child has it


def _read_tail(path: str, tail: deque[str]) -> None:
    with open(path, "rb") as f:
        for line in f:
            tail.append(line.decode(errors="replace"))


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
