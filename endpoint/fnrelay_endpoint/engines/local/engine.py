"""Engine `local`: a pool of worker processes on this machine, started on first use, kept warm
while there is work and stopped after `idle_timeout` seconds without any.

Each worker is a process started by multiprocessing's forkserver (never a plain fork of the
threaded agent) that puts itself in its own process group. A task is contained while it runs
(`containment`, beside this module): every process it started ends when it ends, whether it
answered, was cancelled or ran out of walltime (then the worker goes too, and a fresh one takes
its place), and its `memory` is enforced. Its stdout and stderr go to its own capped files
(`task_output`), not the agent's log.

One feeder thread per worker hands it tasks FIFO from a shared queue and waits for the
answer, so an idle worker picks up the next task at once. A task submitted while a worker idles
goes down that worker's pipe from `submit` itself: waking the feeder first would cost a thread
switch on the task's way in.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fnrelay.errors import ConfigurationError
from fnrelay.functions import parse_walltime
from fnrelay.wire import (
    FORMAT_GLOBUS,
    ExceptionInfo,
    ResultMessage,
    StatusUpdate,
    TaskMessage,
    TaskState,
)
from fnrelay.wire.names import ENV_GC_TASK_UUID, ENV_MPI_PREFIX
from fnrelay_endpoint.config import validators as check
from fnrelay_endpoint.engines import interpreters, pyenvs
from fnrelay_endpoint.engines.base import (
    RUNNING_HOLD,
    Engine,
    ResultCallback,
    StatusCallback,
    failed_result,
    refused_result,
)
from fnrelay_endpoint.engines.fair_queue import FairQueue
from fnrelay_endpoint.engines.interpreters import Interpreter, Interpreters
from fnrelay_endpoint.engines.local import foreign, task_output
from fnrelay_endpoint.engines.local.containment import (
    MODES,
    Containment,
    WorkerContainment,
    memory_limit_error,
)
from fnrelay_endpoint.engines.local.mpi_env import allow_root_launch, set_mpi_env
from fnrelay_endpoint.engines.local.task_output import DEFAULT_OUTPUT_LIMIT, TaskOutput
from fnrelay_endpoint.engines.resources import (
    LAYOUT_KEYS,
    ResourceSpecification,
    ResourceSpecificationError,
    memory_bytes,
    parse_memory,
)
from fnrelay_endpoint.worker import cancelled_result, exception_info, execute

log = logging.getLogger(__name__)

#: Seconds an idle worker waits for work before it is stopped (the endpoint's footprint
#: returns to the agent alone); the next task starts a fresh one.
DEFAULT_IDLE_TIMEOUT = 600.0
CONFIG_KEYS = frozenset({"type", "max_workers", "idle_timeout", "containment", "output_limit",
                         "output_retention", "mpi_options", "working_dir",
                         interpreters.KEY, pyenvs.KEY})
#: Worker starts in a row that may fail on another interpreter before its queued tasks fail.
START_ATTEMPTS = 3
WORKER_START_ERROR_TYPE = "fnrelay_endpoint.WorkerStartError"
#: Where workers run tasks, under the endpoint's directory (Globus Compute's default name).
DEFAULT_WORKING_DIR = "tasks_working_dir"
#: Seconds a task's output files are kept (as the journal keeps results by default).
DEFAULT_OUTPUT_RETENTION = 7 * 24 * 3600.0
_PRUNE_EVERY = 3600.0

_CONTEXT = multiprocessing.get_context("forkserver")


def _preload() -> list[str]:
    """Modules the forkserver imports once for all workers: the worker's, this one (its
    `_worker_main` is what a worker runs), and the module this process runs as (`python -m
    fnrelay_endpoint.cli`), which multiprocessing imports again in every new worker; without
    it there, each worker start paid ~90 ms of CPU importing it and its dependencies. A
    `__main__` module (`python -m fnrelay_endpoint`, how endpoints start in the background)
    or a `-c` (how children start) multiprocessing does not run again, nor is it preloaded."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    main = getattr(spec, "name", None) or ""
    ours = main.startswith("fnrelay_endpoint.") and not main.endswith(".__main__")
    return ["fnrelay_endpoint.worker", __name__, *([main] if ours else [])]


#: What the local engine honours of a resource_specification: a walltime, the memory the
#: task may use on this node (as a scheduler reads it per node), and an MPI layout on this
#: one machine (MPIFunction starts `mpiexec -n $FNRELAY_NUM_RANKS`).
LOCAL_KEYS = frozenset({"walltime", "memory", *LAYOUT_KEYS})
#: Placement requests for a scheduler, which this machine answers as it is: accepted, no
#: effect (a Harvester queue sends them for every worker).
PLACEMENT_KEYS = frozenset({"cores_per_rank", "gpus_per_node", "partition", "queue",
                            "account", "qos", "constraint", "exclusive"})


def refusal(spec: dict[str, Any] | None) -> str | None:
    """Why the local engine cannot run a task with resource_specification `spec`, or None.
    What would change the result is refused rather than ignored: a bad value (a walltime it
    cannot read meant no limit), more than one node, a container or conda environment (the
    task would run in another software environment without a word)."""
    if not spec:
        return None
    try:
        layout = ResourceSpecification.from_task(spec)
    except ResourceSpecificationError as e:
        return str(e)
    unknown = sorted(set(spec) - LOCAL_KEYS - PLACEMENT_KEYS)
    if unknown:
        return (f"resource_specification {unknown[0]!r}: the local engine runs tasks on the "
                f"endpoint's own machine as they are; use a batch or parsl endpoint for it")
    if layout.num_nodes != 1:
        return (f"resource_specification 'num_nodes': the local engine has one node (got "
                f"{layout.num_nodes})")
    return None


def _num_ranks(task: TaskMessage) -> int | None:
    """The MPI ranks a task asks for (None: it sets no layout, or one `submit` refused)."""
    spec = task.resource_specification
    if not spec or not any(k in spec for k in LAYOUT_KEYS):
        return None
    try:
        return ResourceSpecification.from_task(spec).num_ranks
    except ResourceSpecificationError:  # never raise in the worker's loop: it would die
        return None


def _check_mpi_options(value: Any, source: str) -> None:
    """engine.mpi_options: a list of launcher options (e.g. ["--oversubscribe"])."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise check.refuse(source, "engine.mpi_options", "must be a list of mpiexec options, "
                           'e.g. ["--oversubscribe"]', value)


def task_memory(task: TaskMessage) -> str | None:
    """The task's memory request, normalized ("512M"; None: no limit or one refused)."""
    value = (task.resource_specification or {}).get("memory")
    if value is None:
        return None
    try:
        return parse_memory(value)
    except ResourceSpecificationError:
        return None


@dataclass(frozen=True)
class _WorkerSettings:
    """What a worker needs besides its pipe (sent once, when it starts)."""

    containment: WorkerContainment
    output_root: Path
    output_limit: int
    #: The directory every task starts in (never the agent's own cwd).
    working_dir: Path
    #: Options between `mpiexec` and `-n` in the default MPI launcher.
    mpi_options: tuple[str, ...] = ()


def _worker_main(conn: Connection, settings: _WorkerSettings) -> None:
    """Body of a pool process: own process group, then run tasks until the pipe closes."""
    os.setpgrp()
    settings.containment.setup()
    admin_prefix = os.environ.get(ENV_MPI_PREFIX)  # the endpoint's own, if its admin set one
    allow_root_launch()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        set_mpi_env(_num_ranks(task), admin_prefix, settings.mpi_options)
        _enter_working_dir(settings.working_dir, task.task_id)
        conn.send(("result", _run(task, settings)))


def _enter_working_dir(path: Path, task_id: str) -> None:
    """Each task starts in the engine's working directory (the last one may have moved), so
    the files a task writes by relative path (GC's ShellFunction: <task>.stdout) land there
    and not wherever the endpoint was started. ``$GC_TASK_UUID`` is Globus Compute's name of
    the task, which its ShellFunction names those files after."""
    os.environ[ENV_GC_TASK_UUID] = task_id
    try:
        os.chdir(path)
    except OSError:  # removed meanwhile: make it again rather than kill the worker
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chdir(path)


def _run(task: TaskMessage, settings: _WorkerSettings) -> ResultMessage:
    """Run one task contained: its output to its files, its processes ended with it, its
    memory limited; a task over its memory fails saying so (never retried)."""
    memory = task_memory(task)
    output = TaskOutput(settings.output_root, task.task_id, settings.output_limit)
    output.start()
    box = settings.containment.begin(None if memory is None else memory_bytes(memory))
    try:
        result = execute(task)
    finally:
        try:
            oom = box.end()
        finally:  # the worker's own stdout and stderr back, whatever happened
            outputs = output.finish()
    exc = result.exception
    hit_rlimit = box.by_rlimit and exc is not None and exc.type == "builtins.MemoryError"
    if memory is not None and (oom or hit_rlimit):
        how = ("the task's allocation failed at its RLIMIT_DATA" if hit_rlimit else
               "a process of the task was killed by the memory cgroup's OOM killer")
        err = memory_limit_error(memory, how)
        info = exception_info(err)
        if hit_rlimit and exc is not None:
            info = ExceptionInfo(type=info.type, message=info.message,
                                 traceback=exc.traceback, serialized=info.serialized)
        result = ResultMessage(task_id=task.task_id, status=TaskState.FAILED.value,
                               exception=info, task_group_id=task.task_group_id,
                               details={**result.details, "memory_limit": memory})
    result.details.update(outputs)
    return result


def _kill_group(pid: int | None) -> None:
    """SIGKILL the process group led by `pid` (an idle worker: it runs no task)."""
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class WalltimeExceededError(TimeoutError):
    """A task ran longer than its resource_specification's walltime and was killed."""


def task_walltime(task: TaskMessage) -> int | None:
    """The task's walltime in seconds (None: no limit; a value it cannot read was refused at
    submit)."""
    try:
        return parse_walltime((task.resource_specification or {}).get("walltime"))
    except ValueError:
        return None


class _Slot:
    """One worker process, the task it runs, and whether that task was cancelled."""

    def __init__(self, index: int, lock: threading.Lock):
        self.index = index
        #: Wakes this slot's feeder only (shares the engine's lock).
        self.wake = threading.Condition(lock)
        self.process: Any = None
        self.conn: Connection | None = None  # the pipe to the worker while it lives
        self.task: TaskMessage | None = None
        self.cancelled = False
        self.reported = False  # slot.task's "running" update went out
        #: The feeder waits for work with a live worker: `submit` may hand a task straight down.
        self.idle = False
        self.handed = False  # `submit` already sent slot.task down the pipe


class LocalEngine(Engine):
    name = "local"
    holds_running = True

    def __init__(self, max_workers: int, on_result: ResultCallback, on_status: StatusCallback,
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT, *,
                 containment: str = "auto", output_dir: Path | None = None,
                 output_limit: int = DEFAULT_OUTPUT_LIMIT,
                 output_retention: float | None = DEFAULT_OUTPUT_RETENTION,
                 mpi_options: tuple[str, ...] = (), working_dir: Path | None = None,
                 python: Interpreter | None = None, versions: Interpreters | None = None,
                 environments: pyenvs.Environments | None = None):
        super().__init__(on_result, on_status)
        #: The interpreter of this pool's workers (None: the endpoint's own, by forkserver).
        self.python = python
        #: Other interpreters, each with a pool of its own made on first use (by path).
        self._versions = versions
        self._envs = environments
        self._pools: dict[str, LocalEngine] = {}
        self._preparing: dict[str, TaskMessage] = {}  # tasks waiting for their environment
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        #: Seconds a worker may wait for work before it is stopped (None: never).
        self.idle_timeout = idle_timeout
        self._containment = Containment(containment)
        #: Task output goes under <output_dir>/tasks/ (None: a private temporary directory,
        #: removed at shutdown).
        self.output_dir = output_dir
        self._own_output_dir = False
        self.output_limit = output_limit
        self.output_retention = output_retention
        self.mpi_options = mpi_options
        #: Where tasks start (None: `tasks_working_dir` under output_dir).
        self.working_dir = working_dir
        self._stopped = threading.Event()  # ends the pruner
        self._queue = FairQueue()  # submitters in turn: a shared endpoint
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # queue and life cycle; feeders without workers
        self._slots = [_Slot(i, lock) for i in range(max_workers)]
        self._threads: list[threading.Thread] = []
        self._stopping = False

    @classmethod
    def validate_config(cls, config: dict[str, Any], source: str) -> dict[str, Any]:
        check.known_keys(config, CONFIG_KEYS, source, "engine.", "engine 'local'")
        workers = config.get("max_workers", os.cpu_count() or 1)
        check.integer(workers, "engine.max_workers", source, low=1)
        idle = config.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)
        check.seconds_or_null(idle, "engine.idle_timeout", source, "never stop idle workers")
        check.one_of(config.get("containment", "auto"), "engine.containment", source, MODES)
        check.integer(config.get("output_limit", DEFAULT_OUTPUT_LIMIT), "engine.output_limit",
                      source, unit="bytes")
        check.seconds_or_null(config.get("output_retention", DEFAULT_OUTPUT_RETENTION),
                              "engine.output_retention", source, "keep task output forever")
        _check_mpi_options(config.get("mpi_options", []), source)
        working_dir = config.get("working_dir", DEFAULT_WORKING_DIR)
        if not isinstance(working_dir, str) or not working_dir.strip():
            raise check.refuse(source, "engine.working_dir", "must be a directory path",
                               working_dir)
        paths = interpreters.validate(config.get(interpreters.KEY), source)
        envs = pyenvs.EnvSettings.validate(config.get(pyenvs.KEY), source)
        # The containment and output keys appear only when set: their defaults live in
        # from_config, and a config that never names them reads as it did before they existed.
        chosen: dict[str, Any] = {
            k: config[k] for k in ("containment", "output_limit", "output_retention",
                                   "mpi_options", "working_dir")
            if k in config}
        chosen.update({k: v for k, v in ((interpreters.KEY, paths), (pyenvs.KEY, envs)) if v})
        return {"type": "local", "max_workers": workers, "idle_timeout": idle, **chosen}

    @classmethod
    def from_config(cls, config: dict[str, Any], workdir: Path, on_result: ResultCallback,
                    on_status: StatusCallback) -> LocalEngine:
        idle = config.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)
        retention = config.get("output_retention", DEFAULT_OUTPUT_RETENTION)
        envs = config.get(pyenvs.KEY)
        # Without environments to make, a configured interpreter runs the workers itself: its
        # own environment must hold what they import.
        needs = "" if envs else foreign.__name__
        return cls(int(config["max_workers"]), on_result, on_status,
                   None if idle is None else float(idle),
                   containment=config.get("containment", "auto"), output_dir=Path(workdir),
                   output_limit=int(config.get("output_limit", DEFAULT_OUTPUT_LIMIT)),
                   output_retention=None if retention is None else float(retention),
                   mpi_options=tuple(config.get("mpi_options", ())),
                   working_dir=Path(workdir) / config.get("working_dir", DEFAULT_WORKING_DIR),
                   versions=Interpreters.start(config.get(interpreters.KEY) or {}, needs=needs),
                   environments=None if not envs else pyenvs.Environments(
                       pyenvs.EnvSettings.of(envs), Path(workdir)))

    # --- public API -----------------------------------------------------------------------
    def start(self) -> None:
        _CONTEXT.set_forkserver_preload(_preload())
        self._containment.start()
        if self.output_dir is None:
            self.output_dir = Path(tempfile.mkdtemp(prefix="fnrelay-local-output-"))
            self._own_output_dir = True
        (self.output_dir / "tasks").mkdir(parents=True, exist_ok=True, mode=0o700)
        # Absolute: workers chdir into working_dir before each task, and a relative
        # FNRELAY_HOME would otherwise move the output root with them.
        self.output_dir = self.output_dir.absolute()
        if self.working_dir is None:
            self.working_dir = self.output_dir / DEFAULT_WORKING_DIR
        self.working_dir = self.working_dir.absolute()
        self.working_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.output_retention is not None and not self._own_output_dir:
            threading.Thread(target=self._prune_loop, daemon=True,
                             name="fnrelay-local-output-pruner").start()
        for slot in self._slots:
            t = threading.Thread(target=self._feed, args=(slot,), daemon=True,
                                 name=f"fnrelay-local-worker-{slot.index}")
            t.start()
            self._threads.append(t)

    def submit(self, task: TaskMessage) -> None:
        problem = refusal(task.resource_specification)
        if problem is not None:
            self.on_result(refused_result(task, problem))
            return
        try:
            where = self._placement(task)
        except ValueError as e:
            self.on_result(refused_result(task, str(e)))
            return
        if isinstance(where, pyenvs.EnvSpec):
            self._await_environment(task, where)
        elif where is not None:
            if (pool := self._pool(where)) is not None:
                pool._submit_here(task)  # placed: the pool runs it as it is
        else:
            self._submit_here(task)

    def _placement(self, task: TaskMessage) -> Interpreter | pyenvs.EnvSpec | None:
        """Where `task` runs: this pool (None), another interpreter's, or an environment's
        (made first); ValueError: refused (declared packages this endpoint will not install)."""
        versions = self._versions or Interpreters({})
        return pyenvs.place(task.python_version, task.user_endpoint_config, versions,
                            self._envs, globus=task.format == FORMAT_GLOBUS)

    def _pool(self, python: Interpreter) -> LocalEngine | None:
        """The pool of `python`'s workers, made and started on first use (None: stopping;
        the journal re-runs the task at the next start)."""
        with self._cond:
            if self._stopping:
                return None
            pool = self._pools.get(python.path)
            if pool is None:
                pool = LocalEngine(
                    self.max_workers, self.on_result, self.on_status, self.idle_timeout,
                    containment=self._containment.requested, output_dir=self.output_dir,
                    output_limit=self.output_limit, output_retention=None,
                    mpi_options=self.mpi_options, working_dir=self.working_dir, python=python)
                pool.start()
                self._pools[python.path] = pool
            return pool

    def _await_environment(self, task: TaskMessage, spec: pyenvs.EnvSpec) -> None:
        """Run `task` once its environment is made (on a thread: a build takes minutes)."""
        with self._cond:
            self._preparing[task.task_id] = task
        threading.Thread(target=self._in_environment, args=(task, spec), daemon=True,
                         name=f"fnrelay-env-{task.task_id[:8]}").start()

    def _in_environment(self, task: TaskMessage, spec: pyenvs.EnvSpec) -> None:
        assert self._envs is not None
        python: Interpreter | None = None
        try:
            python = self._envs.ensure(spec)
            error = ""
        except (pyenvs.PythonEnvironmentError, ConfigurationError, OSError) as e:
            error = f"cannot make the task's Python {spec.base.version} environment: {e}"
        with self._cond:
            if self._preparing.pop(task.task_id, None) is None or self._stopping:
                return  # cancelled meanwhile, or stopping (the journal re-runs it)
        if python is None:
            self.on_result(failed_result(task, pyenvs.ENVIRONMENT_ERROR_TYPE, error))
        elif (pool := self._pool(python)) is not None:
            pool._submit_here(task)

    def _submit_here(self, task: TaskMessage) -> None:
        """Queue `task` for this pool's workers (or hand it to an idle one)."""
        with self._cond:
            slot = next((s for s in self._slots if s.idle), None)
            if slot is None:
                self._queue.append(task)
                self._cond.notify()  # a feeder without a worker starts one
                return
            slot.idle, slot.task, slot.cancelled, slot.handed = False, task, False, True
            conn = slot.conn
        try:
            assert conn is not None
            conn.send(task)
        except (OSError, ValueError):
            pass  # the worker died meanwhile (e.g. cancelled): its feeder reports the task
        with self._cond:
            slot.wake.notify()  # its feeder goes on to wait for the answer

    def cancel(self, task_id: str) -> bool:
        with self._cond:
            waiting = self._preparing.pop(task_id, None)
            pools = list(self._pools.values())
        if waiting is not None:
            self.on_result(cancelled_result(task_id, waiting.task_group_id,
                                            "cancelled while its environment was made"))
            return True
        if any(pool.cancel(task_id) for pool in pools):
            return True
        with self._cond:
            for queued in self._queue:
                if queued.task_id == task_id:
                    self._queue.remove(queued)
                    break
            else:
                for slot in self._slots:
                    if slot.task is not None and slot.task.task_id == task_id:
                        slot.cancelled = True
                        # Under the lock: the slot cannot move on to its next task meanwhile.
                        self._containment.kill(slot.index, slot.process.pid)
                        return True
                return False
        self.on_result(cancelled_result(queued.task_id, queued.task_group_id,
                                        "cancelled while queued"))
        return True

    def shutdown(self) -> None:
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._stopped.set()
            self._queue.clear()
            self._cond.notify_all()
            for slot in self._slots:
                slot.wake.notify_all()
            pids = [(s.index, s.process.pid) for s in self._slots if s.process is not None]
            pools = list(self._pools.values())
        for pool in pools:
            pool.shutdown()
        for index, pid in pids:
            self._containment.kill(index, pid)
        for t in self._threads:
            t.join(timeout=10)
        self._containment.close(len(self._slots))
        if self._own_output_dir and self.output_dir is not None:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def backlog(self) -> int:
        # A glance, without the lock.
        return len(self._queue) + sum(p.backlog() for p in list(self._pools.values()))

    def info(self) -> dict[str, Any]:
        with self._cond:
            busy = sum(1 for s in self._slots if s.task is not None)
            pools = list(self._pools.values())
            queued = len(self._queue) + len(self._preparing)
        for pool in pools:
            pool_info = pool.info()
            busy, queued = busy + pool_info["busy"], queued + pool_info["queued"]
        versions = (self._versions.versions() if self._versions is not None
                    else [interpreters.own().version])
        return {"engine": self.name, "workers": self.max_workers, "busy": busy,
                "queued": queued, "containment": self._containment.mode,
                "python_versions": versions}

    def _prune_loop(self) -> None:
        """Remove task output older than output_retention, at start and then hourly (on a
        thread of its own: many directories must not delay a task)."""
        assert self.output_dir is not None and self.output_retention is not None
        while True:
            try:
                removed = task_output.prune(self.output_dir, self.output_retention)
            except OSError as e:
                log.warning("cannot prune task output in %s: %s", self.output_dir, e)
            else:
                if removed:
                    log.info("removed the output of %d old task(s)", removed)
            if self._stopped.wait(_PRUNE_EVERY):
                return

    # --- feeder threads ---------------------------------------------------------------------
    def _feed(self, slot: _Slot) -> None:
        """Keep one worker alive and busy until shutdown, started when the first task
        waits (an idle endpoint holds no worker processes, nor the forkserver)."""
        failures = 0
        while self._wait_for_work():
            conn = self._spawn(slot)
            if conn is None:
                failures += 1
                if self.python is not None and failures >= START_ATTEMPTS:
                    self._fail_queued(slot)
                    failures = 0
                time.sleep(1.0)  # the worker died while starting: do not spin
                continue
            failures = 0
            slot.conn = conn
            try:
                self._serve(slot, conn)
            finally:
                with self._cond:
                    slot.conn = None
                conn.close()
                if slot.process.exitcode is None:
                    _kill_group(slot.process.pid)
                slot.process.join(timeout=10)
                self._containment.release(slot.index)  # what a killed task left behind

    def _fail_queued(self, slot: _Slot) -> None:
        """Fail the tasks waiting for workers that do not start on another interpreter (its
        environment changed since the endpoint checked it): infrastructure, so the agent
        retries each up to its max_retries, rather than tasks waiting forever."""
        with self._cond:
            tasks, self._queue = list(self._queue), FairQueue()
        assert self.python is not None
        code = getattr(slot.process, "exitcode", None)
        for task in tasks:
            self.on_result(failed_result(
                task, WORKER_START_ERROR_TYPE,
                f"workers on {self.python.path} (Python {self.python.full_version}) do not "
                f"start (exit code {code}): does its environment still hold fnrelay and dill?",
                details={"infrastructure": True, "reason": "workers do not start"}))

    def _wait_for_work(self) -> bool:
        """Block until a task is queued (True) or the engine stops (False)."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            return not self._stopping

    def _spawn(self, slot: _Slot) -> Connection | None:
        assert self.output_dir is not None and self.working_dir is not None
        settings = _WorkerSettings(self._containment.for_worker(slot.index), self.output_dir,
                                   self.output_limit, self.working_dir, self.mpi_options)
        process: Any
        if self.python is not None:
            with self._cond:
                if self._stopping:
                    return None
                parent, process = foreign.start(self.python.path, settings)
                slot.process = process
        else:
            parent, child = _CONTEXT.Pipe(duplex=True)
            process = _CONTEXT.Process(target=_worker_main, args=(child, settings),
                                       daemon=True, name=f"fnrelay-worker-{slot.index}")
            with self._cond:
                if self._stopping:
                    parent.close()
                    child.close()
                    return None
                process.start()
                slot.process = process
            child.close()  # so the parent sees EOF when the worker dies
        try:
            parent.recv()  # "ready": the worker leads its own process group now
        except (EOFError, OSError):
            log.error("worker %d died while starting (exit code %s)", slot.index,
                      process.exitcode)
            parent.close()
            process.join(timeout=10)
            return None
        return parent

    def _next_task(self, slot: _Slot) -> TaskMessage | None:
        """The next task for `slot`'s worker (queued, or handed down by `submit`); None when
        the engine stops or the worker has been idle for idle_timeout (the feeder then stops
        it; the next task starts one)."""
        deadline = None if self.idle_timeout is None else time.monotonic() + self.idle_timeout
        with self._cond:
            slot.idle = True
            try:
                while slot.task is None and not self._queue and not self._stopping:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        log.info("worker %d idle for %gs: stopping it", slot.index,
                                 self.idle_timeout)
                        return None
                    slot.wake.wait(remaining)
            finally:
                slot.idle = False
            if self._stopping:
                return None  # a task handed down meanwhile is re-run from the journal
            if slot.task is None:
                slot.task, slot.cancelled, slot.handed = self._queue.popleft(), False, False
            return slot.task

    def _serve(self, slot: _Slot, conn: Connection) -> None:
        """Run tasks on this worker until it dies (cancel, crash) or the engine stops."""
        while True:
            task = self._next_task(slot)
            if task is None:
                return
            walltime = task_walltime(task)
            timed_out = False
            try:
                if not slot.handed:
                    conn.send(task)
                timed_out = not self._wait_for_answer(slot, conn, task, walltime)
                if timed_out:
                    self._containment.kill(slot.index, slot.process.pid)
                    raise EOFError
                _, answer = conn.recv()
                result: ResultMessage | None = answer
            except (EOFError, OSError):
                result = None
            with self._cond:
                slot.task, cancelled, stopping = None, slot.cancelled, self._stopping
                # A worker that answered takes the next task at once, even while its result
                # is still being reported: else a task arriving meanwhile (the next of a
                # caller waiting on this result) is queued and starts a second worker.
                slot.idle = result is not None and not (cancelled or stopping or timed_out)
            if stopping:
                return  # unreported: the journal re-runs it at the next start
            if cancelled:
                self.on_result(cancelled_result(task.task_id, task.task_group_id,
                                                "cancelled while running"))
                return  # the worker was killed: start a fresh one
            if timed_out:
                result = _walltime_result(task, walltime or 0)
                result.details.update(self._outputs(task))
                self.on_result(result)
                return  # the worker was killed: start a fresh one
            if result is None:
                if not slot.reported:  # it did start: its history shows the lost run
                    self._report_running(slot, task)
                self.on_result(self._died(task, slot))
                return
            self.on_result(result)

    def _wait_for_answer(self, slot: _Slot, conn: Connection, task: TaskMessage,
                         walltime: int | None) -> bool:
        """Wait for the worker's answer (False: the walltime ran out first). A task still
        running after RUNNING_HOLD is reported running; a shorter one only by its result, so
        a short task costs the agent one wake-up, not two."""
        slot.reported = False
        hold = RUNNING_HOLD if walltime is None else min(RUNNING_HOLD, walltime)
        if conn.poll(hold):
            return True
        self._report_running(slot, task)
        return walltime is None or conn.poll(max(0.0, walltime - hold))

    def _report_running(self, slot: _Slot, task: TaskMessage) -> None:
        slot.reported = True
        python = self.python or interpreters.own()
        self.on_status(StatusUpdate(task_id=task.task_id, status=TaskState.RUNNING.value,
                                    detail=f"local worker pid {slot.process.pid} "
                                           f"(Python {python.full_version}, {python.path})"))

    def _outputs(self, task: TaskMessage) -> dict[str, Any]:
        """The output a killed task left in its files (its worker could not report it)."""
        if self.output_dir is None:
            return {}
        return task_output.output_details(task_output.task_dir(self.output_dir, task.task_id))

    def _died(self, task: TaskMessage, slot: _Slot) -> ResultMessage:
        self._containment.kill(slot.index, slot.process.pid)  # whatever it started goes too
        slot.process.join(timeout=10)
        oom = self._containment.release(slot.index)
        code = slot.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        memory = task_memory(task)
        details: dict[str, Any] = {"completed": time.time(), **self._outputs(task)}
        if oom and memory is not None:
            # The task's own doing, like a walltime: failed for good.
            err = memory_limit_error(memory, f"the memory cgroup's OOM killer killed the "
                                             f"worker running the task ({how})")
            return ResultMessage(task_id=task.task_id, status=TaskState.FAILED.value,
                                 exception=exception_info(err), task_group_id=task.task_group_id,
                                 details={**details, "memory_limit": memory})
        lost = WorkerLostError(f"the worker process running this task died ({how})")
        # Infrastructure, not the task's answer: the agent retries it (up to max_retries).
        return ResultMessage(task_id=task.task_id, status=TaskState.FAILED.value,
                             exception=exception_info(lost), task_group_id=task.task_group_id,
                             details={**details, "infrastructure": True,
                                      "reason": f"worker lost ({how})"})


class WorkerLostError(RuntimeError):
    """The worker process running a task died (a signal, the OOM killer, os._exit)."""


def _walltime_result(task: TaskMessage, walltime: int) -> ResultMessage:
    """A task killed at its walltime: failed for good (the task's own doing, never retried)."""
    err = WalltimeExceededError(f"walltime exceeded ({walltime} s): the task was killed")
    return ResultMessage(task_id=task.task_id, status=TaskState.FAILED.value,
                         exception=exception_info(err), task_group_id=task.task_group_id,
                         details={"walltime": walltime, "completed": time.time()})


ENGINE = LocalEngine
