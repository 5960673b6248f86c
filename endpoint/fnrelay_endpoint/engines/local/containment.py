"""What a task on the local engine may leave behind and use: its processes end with it, and
its `memory` is a limit.

Two ways, chosen per engine (`containment` in its config):

- **cgroup**: each slot has a cgroup of its own in the cgroup v2 hierarchy; the worker moves
  itself into it when a task begins and back out when it ends, so every process the task
  started, whatever its session or parent, is in it, and `cgroup.kill` ends them all at once.
  With a `memory` request the worker also joins a memory cgroup made for the task in the v1
  memory controller (hybrid hosts, like these), whose OOM killer bounds the total of all the
  task's processes. Without a v1 memory controller (a pure v2 host: its memory controller
  is the agent's cgroup's to hand down, which a service rarely does) `memory` is enforced as
  in the fallback.
- **fallback** (no usable cgroups, or chosen): each worker is a child subreaper, so a process
  that double-forks or calls setsid is re-parented to the worker, never to init, and the worker
  kills its whole descendant tree (stopped first, so it cannot fork while it is looked at) when
  a task ends. `memory` becomes the task's RLIMIT_DATA (per process, not a total).

Threads: the engine side (`Containment`) runs on the engine's feeder threads, one per slot, and
under the engine's lock for a cancel; the worker side (`WorkerContainment`) in the worker's
main thread between its tasks. Nothing here raises for a cgroup that refuses a write at the end
of a task: what could not be done is logged, and the worker's process tree is killed instead.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import resource
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from fnrelay.errors import ConfigurationError
from fnrelay.processes import pid_alive

log = logging.getLogger(__name__)

MODES = ("auto", "cgroup", "fallback")
#: Chooses the mode where the engine's config leaves it at "auto" (tests, and admins trying
#: the fallback on a host that has cgroups).
ENV_CONTAINMENT = "FNRELAY_LOCAL_CONTAINMENT"
#: How the failure of a task that went over its memory request begins.
MEMORY_LIMIT_MESSAGE = "memory limit exceeded"
_PR_SET_CHILD_SUBREAPER = 36
#: Upper bound for a killed cgroup to empty (a process in uninterruptible I/O takes a moment).
_KILL_WAIT = 5.0
_BASE_PREFIX = "fnrelay-local-"
_BASE_NAME = re.compile(r"^fnrelay-local-(\d+)-[0-9a-f]+$")


class MemoryLimitExceededError(MemoryError):
    """A task used more memory than its resource_specification's `memory` allowed."""


def memory_limit_error(limit: str, how: str) -> MemoryLimitExceededError:
    """The task's failure when it went over `limit` ("512M"); `how` says what happened."""
    return MemoryLimitExceededError(
        f"{MEMORY_LIMIT_MESSAGE} ({limit}): {how}; ask for more `memory` in the task's "
        "resource_specification, or use less")


# --- cgroup file systems -----------------------------------------------------------------------
def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup file system."""
    found = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    found.append((parts[1].replace("\\040", " "), parts[2],
                                  set(parts[3].split(","))))
    except OSError:
        pass
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per hierarchy: "" for v2, the controller name for v1."""
    paths = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    paths[c] = path
    except OSError:
        pass
    return paths


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@dataclass(frozen=True)
class SlotCgroups:
    """A slot's cgroups: `kill` in v2, kept while the engine runs (the worker joins it for
    each task); `memory` in v1, made for each task that has a memory request (a fresh limit
    and OOM count, and the task's charges leave with it)."""

    kill: Path
    memory: Path | None

    def populated(self) -> bool:
        try:
            return "populated 1" in (self.kill / "cgroup.events").read_text()
        except OSError:
            return False

    def kill_all(self) -> bool:
        """SIGKILL every process in the slot's cgroup; True once it is empty."""
        if not self.populated():
            return True
        try:
            _write(self.kill / "cgroup.kill", "1")
        except OSError as e:
            log.warning("cannot kill the processes of cgroup %s: %s", self.kill, e)
        deadline = time.monotonic() + _KILL_WAIT
        while self.populated():
            if time.monotonic() > deadline:
                log.warning("processes of cgroup %s outlived SIGKILL for %gs", self.kill,
                            _KILL_WAIT)
                return False
            time.sleep(0.002)
        return True

    def oom_kills(self) -> int:
        """Processes the task's memory cgroup's OOM killer killed (0 without one)."""
        if self.memory is None:
            return 0
        try:
            text = (self.memory / "memory.oom_control").read_text()
        except OSError:
            return 0
        m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        return int(m.group(1)) if m else 0

    def remove_memory(self) -> None:
        """Remove the task's memory cgroup (its processes are gone: they were in `kill`)."""
        if self.memory is not None:
            _rmdir(self.memory)


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                log.warning("cannot remove cgroup %s: %s", path, e)
                return
            time.sleep(0.01)  # its last processes are still on their way out
    log.warning("cannot remove cgroup %s: still busy", path)


@dataclass(frozen=True)
class _Bases:
    """The engine's own cgroups under the agent's: v2 (kill), v1 memory if mounted."""

    kill: Path
    memory: Path | None


def _find_bases() -> tuple[_Bases | None, str]:
    """Create the engine's cgroups, or say why cgroups cannot be used here."""
    mounts, own = _mounts(), _own_cgroups()
    v2 = next((m for m, kind, _ in mounts if kind == "cgroup2"), None)
    if v2 is None or "" not in own:
        return None, "no cgroup v2 hierarchy is mounted"
    name = f"{_BASE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    kill = Path(v2 + own[""]) / name
    try:
        kill.mkdir()
    except OSError as e:
        return None, f"cannot create cgroup {kill}: {e}"
    if not (kill / "cgroup.kill").exists():
        kill.rmdir()
        return None, f"cgroup {kill} has no cgroup.kill (Linux 5.14 or later needed)"
    memory = None
    v1_mount = next((m for m, kind, opts in mounts if kind == "cgroup" and "memory" in opts),
                    None)
    if v1_mount is not None and "memory" in own:
        candidate = Path(v1_mount + own["memory"]) / name
        try:
            candidate.mkdir()
            memory = candidate
        except OSError as e:
            log.info("memory limits by RLIMIT_DATA: cannot create cgroup %s: %s", candidate, e)
    else:
        log.info("memory limits by RLIMIT_DATA: no cgroup v1 memory controller is mounted")
    _sweep_stale(kill.parent, memory.parent if memory is not None else None)
    return _Bases(kill, memory), ""


def _sweep_stale(*parents: Path | None) -> None:
    """Kill and remove what an endpoint that died left in its cgroups (its pid is gone)."""
    for parent in parents:
        if parent is None:
            continue
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for base in entries:
            m = _BASE_NAME.fullmatch(base.name)
            if not m or pid_alive(int(m.group(1))):
                continue
            try:
                slots = [p for p in base.iterdir() if p.is_dir()]
            except OSError:
                continue
            for cgroup in [*slots, base]:
                if (cgroup / "cgroup.kill").exists():
                    SlotCgroups(cgroup, None).kill_all()
                else:  # a v1 memory cgroup: its processes were in the v2 one too
                    _kill_pids(_read_pids(cgroup / "cgroup.procs"))
                _rmdir(cgroup)


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in path.read_text().split()]
    except (OSError, ValueError):
        return []


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- process trees (the fallback) --------------------------------------------------------------
def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (/proc; children lists are not in every kernel)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        table[int(entry.name)] = int(fields[1])
    return table


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def kill_tree(root: int, include_root: bool) -> int:
    """SIGKILL every descendant of `root` (and `root` itself if asked); how many were found.

    Each process is stopped before it is killed and the tree is read again until no new one
    appears: a process cannot fork once stopped, so none is born after the last look."""
    stopped: set[int] = set()
    if include_root:
        try:
            os.kill(root, signal.SIGSTOP)
        except (ProcessLookupError, PermissionError):
            pass
    while True:
        fresh = [p for p in _descendants(root) if p not in stopped]
        if not fresh:
            break
        for pid in fresh:
            try:
                os.kill(pid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                pass
            stopped.add(pid)
    _kill_pids([*stopped, *([root] if include_root else [])])
    return len(stopped)


def _reap() -> bool:
    """Collect exited children; True if this process still has any child (alive)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children rather than init's (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _data_size() -> int:
    """Bytes of private writable memory this process holds (VmData, what RLIMIT_DATA counts)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# --- the worker's side ---------------------------------------------------------------------------
@dataclass
class WorkerContainment:
    """What one worker needs to contain its tasks (sent to it when it starts; picklable).

    In cgroup mode the worker lives in its slot's cgroup, so a task's processes are born in
    it; at the end of a task it looks whether anyone else is there (one read) and only then
    steps out to kill them: moving a process between cgroups costs more than a short task."""

    mode: str  # "cgroup" or "fallback"
    slot: SlotCgroups | None  # cgroup mode only
    #: The agent's cgroups, where the worker steps out to (v2) and returns after a memory
    #: cgroup (v1).
    home_kill: Path | None = None
    home_memory: Path | None = None
    in_slot: bool = False  # set in the worker by setup()

    def setup(self) -> None:
        """Once, in the new worker: into its slot's cgroup; a subreaper in either mode (it
        reaps what it kills, and catches what escapes a cgroup it could not join)."""
        if not become_subreaper() and self.mode == "fallback":
            log.warning("worker %d cannot become a child subreaper: processes its tasks "
                        "detach may outlive them", os.getpid())
        if self.slot is not None:
            try:
                self.slot.kill.mkdir(exist_ok=True)
                _write(self.slot.kill / "cgroup.procs", str(os.getpid()))
                self.in_slot = True
            except OSError as e:
                log.warning("worker %d cannot join cgroup %s (%s): containing its tasks as "
                            "the fallback does", os.getpid(), self.slot.kill, e)

    def begin(self, memory: int | None) -> _TaskBox:
        """Start containing a task that may use `memory` bytes (None: no limit)."""
        box = _TaskBox(self, memory)
        box.enter()
        return box

    def sweep(self) -> None:
        """Kill every process of the slot's cgroup but this worker."""
        assert self.slot is not None and self.home_kill is not None
        me = os.getpid()
        if not [p for p in _read_pids(self.slot.kill / "cgroup.procs") if p != me]:
            return
        try:
            _write(self.home_kill / "cgroup.procs", str(me))
        except OSError as e:  # the cgroup's kill would end this worker: its tree instead
            log.warning("cannot step out of cgroup %s: %s", self.slot.kill, e)
            return
        self.slot.kill_all()
        try:
            _write(self.slot.kill / "cgroup.procs", str(me))
        except OSError as e:
            self.in_slot = False
            log.warning("cannot return to cgroup %s (%s): containing tasks as the fallback "
                        "does", self.slot.kill, e)


class _TaskBox:
    """One task's containment, from `begin` to `end`."""

    def __init__(self, owner: WorkerContainment, memory: int | None):
        self.owner, self.memory = owner, memory
        self.joined_memory = False
        self.saved_rlimit: tuple[int, int] | None = None

    @property
    def by_rlimit(self) -> bool:
        """The memory limit is this process's RLIMIT_DATA (a MemoryError is the task's)."""
        return self.saved_rlimit is not None

    def enter(self) -> None:
        slot = self.owner.slot
        if self.memory is not None and slot is not None and slot.memory is not None \
                and self.owner.home_memory is not None:
            try:
                self._join_memory(slot.memory)
            except OSError as e:  # the fallback's limit rather than none, or a failed task
                log.warning("cannot limit memory with cgroup %s (%s): by RLIMIT_DATA",
                            slot.memory, e)
        if self.memory is not None and not self.joined_memory:
            self.saved_rlimit = resource.getrlimit(resource.RLIMIT_DATA)
            soft, hard = self.saved_rlimit
            # What the worker holds is not the task's: the task gets `memory` on top of it.
            limit = _data_size() + self.memory
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))

    def _join_memory(self, memory: Path) -> None:
        assert self.memory is not None
        memory.mkdir(exist_ok=True)
        _write(memory / "memory.limit_in_bytes", str(self.memory))
        try:  # with swap accounting, memory+swap too (a task must not swap past its limit)
            _write(memory / "memory.memsw.limit_in_bytes", str(self.memory))
        except OSError:
            pass
        _write(memory / "cgroup.procs", str(os.getpid()))
        self.joined_memory = True

    def end(self) -> bool:
        """Kill what the task left running, leave its memory cgroup, restore limits; True if
        a process of the task was killed for going over its memory limit."""
        if self.saved_rlimit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, self.saved_rlimit)
        owner, slot = self.owner, self.owner.slot
        oom = False
        if self.joined_memory and slot is not None and owner.home_memory is not None:
            try:
                _write(owner.home_memory / "cgroup.procs", str(os.getpid()))
            except OSError as e:
                log.warning("cannot leave memory cgroup %s: %s", slot.memory, e)
        # The worker is a subreaper in either mode: any process the task left alive is a
        # descendant of it, so no child at all (one system call) means nothing to sweep.
        if _reap():
            if owner.in_slot:
                owner.sweep()
            if _reap():  # the fallback's way (or a cgroup that failed us)
                kill_tree(os.getpid(), include_root=False)
                deadline = time.monotonic() + _KILL_WAIT
                while _reap() and time.monotonic() < deadline:
                    time.sleep(0.002)
        if self.joined_memory and slot is not None:
            oom = slot.oom_kills() > 0
            slot.remove_memory()
        return oom


# --- the engine's side ---------------------------------------------------------------------------
class Containment:
    """The engine's view: which mode, each slot's cgroups, and kills from outside a worker."""

    def __init__(self, requested: str = "auto"):
        if requested not in MODES:
            raise ConfigurationError(f"containment must be one of {', '.join(MODES)}, "
                                     f"got {requested!r}")
        self.requested = requested
        self.mode = "fallback"
        self._bases: _Bases | None = None

    def start(self) -> None:
        """Pick the mode: cgroups where they work (or were asked for), else the fallback."""
        requested = self.requested
        if requested == "auto":
            requested = os.environ.get(ENV_CONTAINMENT) or "auto"
            if requested not in MODES:
                raise ConfigurationError(f"{ENV_CONTAINMENT} must be one of "
                                         f"{', '.join(MODES)}, got {requested!r}")
        if requested == "fallback":
            return
        bases, why = _find_bases()
        if bases is None:
            if requested == "cgroup":
                raise ConfigurationError(f"task containment 'cgroup' was asked for, but {why}")
            log.info("task containment by subreaper and RLIMIT_DATA: %s", why)
            return
        self._bases, self.mode = bases, "cgroup"

    def slot(self, index: int) -> SlotCgroups | None:
        if self._bases is None:
            return None
        memory = self._bases.memory
        return SlotCgroups(self._bases.kill / f"slot{index}",
                           None if memory is None else memory / f"slot{index}")

    def for_worker(self, index: int) -> WorkerContainment:
        bases = self._bases
        return WorkerContainment(
            self.mode, self.slot(index), None if bases is None else bases.kill.parent,
            None if bases is None or bases.memory is None else bases.memory.parent)

    def kill(self, index: int, pid: int | None) -> None:
        """End slot `index`'s worker `pid` and everything its task started."""
        slot = self.slot(index)
        if slot is not None and slot.populated():
            slot.kill_all()
        elif pid:  # the fallback, or a worker that could not join its cgroup
            kill_tree(pid, include_root=True)
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def release(self, index: int) -> bool:
        """After slot `index`'s worker is gone: kill what its task left, remove the task's
        memory cgroup; True if that cgroup's OOM killer had struck."""
        slot = self.slot(index)
        if slot is None:
            return False
        slot.kill_all()
        oom = slot.oom_kills() > 0
        slot.remove_memory()
        return oom

    def close(self, slots: int) -> None:
        """At shutdown: every slot emptied, the engine's cgroups removed."""
        if self._bases is None:
            return
        for i in range(slots):
            self.release(i)
            slot = self.slot(i)
            if slot is not None:
                _rmdir(slot.kill)
        _rmdir(self._bases.kill)
        if self._bases.memory is not None:
            _rmdir(self._bases.memory)
