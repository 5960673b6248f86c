"""A local task's stdout and stderr: its own capped files, never the endpoint's log.

A pool worker inherits the agent's stdout and stderr (endpoint.log for a started endpoint), so
whatever a task or its child processes printed used to land there, unbounded. For each task
the worker now points its file descriptors 1 and 2 at pipes; one thread drains them into
``<root>/tasks/<task_id>/stdout`` and ``stderr`` (the batch engine's sandbox names), each
capped at `limit` bytes. Past the cap, output is counted and dropped except its last TAIL_KEPT
bytes, which are appended with a note saying how much was dropped: the file keeps both how the
output began and how it ended. Files are created on the first byte (a quiet task leaves none)
and pruned after the engine's `output_retention`.

The drain thread lives as long as the worker (a thread start per task cost more than the rest
of a short task). A task's pipes end when its last writer is gone, which is how the worker
knows its output is complete; a stream that never had a byte is closed by the worker itself.
Buffers are allocated before the task starts, so a task at its RLIMIT_DATA (the memory
fallback) cannot starve the drain and block itself on a full pipe.

Threads: the worker's main thread opens and finishes a task's output; the drain thread reads
the pipes and writes the files; `_Sink.lock` decides which of them closes a stream.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import select
import shutil
import struct
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from fnrelay_endpoint.engines.batch.sandbox import Sandbox, tail

log = logging.getLogger(__name__)

#: Bytes kept per stream by default (the engine's `output_limit`).
DEFAULT_OUTPUT_LIMIT = 10 * 1024 * 1024
#: Bytes past the cap kept and appended at the end, so the file shows how the output ended.
TAIL_KEPT = 64 * 1024
_CHUNK = 64 * 1024
STREAMS = ("stdout", "stderr")


def task_dir(root: Path, task_id: str) -> Path:
    """The task's output directory (a task id that is no plain name is hashed)."""
    try:
        return Sandbox.of(root, task_id).path
    except ValueError:
        return Sandbox.of(root, hashlib.sha256(task_id.encode()).hexdigest()[:32]).path


def output_details(directory: Path) -> dict[str, Any]:
    """What a result carries of a task's output: each stream's file and its last lines."""
    details: dict[str, Any] = {}
    for name in STREAMS:
        path = directory / name
        if path.exists():
            details[f"{name}_file"] = str(path)
            details[f"{name}_tail"] = tail(path)
    return details


class _Sink:
    """One stream of one task: the file up to the cap, then a ring of the last bytes."""

    def __init__(self, owner: TaskOutput, name: str, limit: int):
        self.owner, self.name, self.limit = owner, name, limit
        self.file: Any = None
        self.written = 0
        self.dropped = 0
        self.ring: bytearray | None = None  # made once the cap is reached
        self.ring_pos = 0
        self.ring_full = False
        self.broken = False
        #: Held while a read is fed in: the worker may retire a quiet stream itself.
        self.lock = threading.Lock()
        self.received = 0
        self.closed = False
        #: Released once the stream has ended and its file is closed (a Lock: an Event costs
        #: a Condition, per stream of every task).
        self.done = threading.Lock()
        self.done.acquire()

    def feed(self, data: memoryview) -> None:
        room = self.limit - self.written
        if room > 0:
            head = data[:room]
            self.written += len(head)
            data = data[room:]
            self._write(head)
        if len(data):
            self.dropped += len(data)
            self._keep(data)

    def _write(self, data: memoryview | bytes) -> None:
        """Into the file; a file that cannot be written (a full disk) drops what follows:
        the pipe is still drained, or the task would block on it."""
        if self.broken:
            return
        try:
            if self.file is None:
                directory = self.owner.directory
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(directory / self.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                             0o600)
                self.file = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed in close()
            self.file.write(data)
        except OSError as e:
            self.broken = True
            log.warning("cannot keep a task's output in %s: %s", self.owner.directory, e)

    def _keep(self, data: memoryview) -> None:
        if self.ring is None:
            try:
                self.ring = bytearray(TAIL_KEPT)
            except MemoryError:  # at the task's RLIMIT_DATA: the note says what was dropped
                return
        if len(data) >= TAIL_KEPT:
            self.ring[:] = data[-TAIL_KEPT:]
            self.ring_pos, self.ring_full = 0, True
            return
        end = self.ring_pos + len(data)
        if end <= TAIL_KEPT:
            self.ring[self.ring_pos:end] = data
        else:
            first = TAIL_KEPT - self.ring_pos
            self.ring[self.ring_pos:] = data[:first]
            self.ring[:end - TAIL_KEPT] = data[first:]
            self.ring_full = True
        self.ring_pos = end % TAIL_KEPT
        self.ring_full = self.ring_full or end >= TAIL_KEPT

    def close(self) -> None:
        if self.dropped:
            ring = self.ring or bytearray()
            kept = (bytes(ring[self.ring_pos:]) + bytes(ring[:self.ring_pos])
                    if self.ring_full else bytes(ring[:self.ring_pos]))
            skipped = self.dropped - len(kept)
            note = (f"\n[fnrelay: {self.name} went over its {self.limit}-byte limit; "
                    f"{skipped} bytes dropped, the last {len(kept)} follow]\n")
            self._write(note.encode() + kept)
        if self.file is not None:
            self.file.close()


class _Drain:
    """The worker's drain thread and the pipes it reads (one epoll; new pipes are added
    while it waits)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.sinks: dict[int, _Sink] = {}
        self.thread = threading.Thread(target=self._run, daemon=True, name="fnrelay-output")
        self.thread.start()

    def add(self, fd: int, sink: _Sink) -> None:
        # Non-blocking: an event read after its pipe was retired may name a new pipe that
        # reuses the number, and a blocking read there would stall every other stream.
        os.set_blocking(fd, False)
        self.sinks[fd] = sink
        self.epoll.register(fd, select.EPOLLIN)

    def retire(self, fd: int, sink: _Sink) -> None:
        """The stream has ended: close its pipe and file (with `sink.lock` held)."""
        self.epoll.unregister(fd)
        self.sinks.pop(fd, None)
        os.close(fd)
        sink.closed = True
        sink.close()
        sink.done.release()

    def _run(self) -> None:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while True:
            try:
                events = self.epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                sink = self.sinks.get(fd)
                if sink is None:
                    continue
                starved = False
                with sink.lock:
                    if sink.closed:
                        continue
                    try:
                        n = os.readv(fd, [buf])
                    except BlockingIOError:
                        continue
                    except MemoryError:  # the task is at its RLIMIT_DATA: it frees or fails
                        n, starved = -1, True
                    if n > 0:
                        sink.received += n
                        sink.feed(view[:n])
                    elif n == 0:
                        self.retire(fd, sink)
                if starved:
                    time.sleep(0.01)


_drain: _Drain | None = None


#: The worker's own stdout and stderr (the agent's), duplicated once: restored after each task.
_own_fds: tuple[int, int] | None = None


class TaskOutput:
    """Fds 1 and 2 of this process, redirected into one task's files from `start` to
    `finish`. Single use, by the worker's main thread."""

    def __init__(self, root: Path, task_id: str, limit: int):
        self.root, self.task_id, self.limit = root, task_id, limit
        self._directory: Path | None = None
        self._sinks: list[_Sink] = []
        self._fds: list[int] = []
        self._sys = (sys.stdout, sys.stderr)

    @property
    def directory(self) -> Path:
        """The task's output directory, named when first needed (most tasks print nothing)."""
        if self._directory is None:
            self._directory = task_dir(self.root, self.task_id)
        return self._directory

    def start(self) -> None:
        global _drain, _own_fds
        if _drain is None:
            _drain = _Drain()
        if _own_fds is None:
            _own_fds = (os.dup(1), os.dup(2))
        _flush()
        for fd, name in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            sink = _Sink(self, name, self.limit)
            self._sinks.append(sink)
            self._fds.append(r)
            _drain.add(r, sink)

    def finish(self) -> dict[str, Any]:
        """Back to the worker's own stdout/stderr once the task's processes are gone (they
        held the pipes); the details the result carries."""
        assert _drain is not None and _own_fds is not None
        _flush()
        sys.stdout, sys.stderr = self._sys
        for fd, sink in zip(self._fds, self._sinks, strict=True):
            # Most tasks print nothing: a stream that never had a byte and has none waiting
            # (its other writers are dead by now) is retired here, before its pipe closes,
            # so the drain thread is not even woken.
            with sink.lock:
                if not sink.closed and sink.received == 0 and _waiting(fd) == 0:
                    _drain.retire(fd, sink)
        for fd, own in zip((1, 2), _own_fds, strict=True):
            os.dup2(own, fd)
        deadline = time.monotonic() + 5
        for sink in self._sinks:
            if not sink.done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                # A process that could not be killed still holds the pipe.
                log.warning("output of a task in %s is still open after it ended",
                            self.directory)
                break
        if not any(sink.received for sink in self._sinks):
            return {}
        return output_details(self.directory)


def _waiting(fd: int) -> int:
    """Bytes waiting in pipe `fd` (FIONREAD)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 1  # unknown: let the drain thread decide


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed by the task
            pass


def prune(root: Path, older_than: float) -> int:
    """Remove task output directories untouched for `older_than` seconds; how many."""
    tasks = root / "tasks"
    cutoff = time.time() - older_than
    removed = 0
    try:
        entries = list(os.scandir(tasks))
    except OSError:
        return 0
    for entry in entries:
        try:
            newest = max([entry.stat().st_mtime,
                          *(f.stat().st_mtime for f in os.scandir(entry.path))])
        except OSError:
            continue
        if newest < cutoff:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed
