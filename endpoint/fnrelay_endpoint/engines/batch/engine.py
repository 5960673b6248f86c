"""Engine `batch`: every task is its own Slurm or PBSPro job.

Per task: validate the resource specification (a refusal fails the task before anything is
submitted), make a sandbox, write the task, render the batch script, submit it with the name
``fnrelay-<task_id>`` (``-attempt<n>`` for the agent's retries, each in a sandbox of its own)
and journal the job id in the sandbox. One submitter thread does this
(sbatch can be slow, and `submit` is called from the agent's I/O thread); one poller thread asks
the scheduler about all jobs at once and turns job states into status updates and results.

Submission is idempotent: a task whose sandbox holds a job id is watched, not resubmitted; one
whose job already ran (exit status or result in the sandbox) is settled from those files; and
before submitting, the scheduler is asked for a job of that name (a crash between sbatch and
journaling the id, or an sbatch that timed out after submitting). A transient submission error
(the scheduler's `is_transient`) puts the task back in front of the queue and pauses all
submissions for a back-off; any other refusal fails the task. `start()` re-attaches to every
sandbox with a job id and no reported result, so an endpoint restart never submits a job twice,
and `shutdown()` leaves the jobs running.
"""

from __future__ import annotations

import base64
import logging
import pickletools
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnrelay.backoff import Backoff
from fnrelay.errors import ConfigurationError
from fnrelay.serialize import TAG_DILL_CODE, TAG_DILL_DATA
from fnrelay.wire import FORMAT_GLOBUS, ResultMessage, StatusUpdate, TaskMessage, TaskState
from fnrelay_endpoint.config import validators as check
from fnrelay_endpoint.engines import interpreters, pyenvs
from fnrelay_endpoint.engines.base import (
    Engine,
    ResultCallback,
    StatusCallback,
    failed_result,
    refused_result,
)
from fnrelay_endpoint.engines.batch.arrays import (
    ARRAYS_DIR,
    MAX_ELEMENTS,
    pack_key,
    write_array,
)
from fnrelay_endpoint.engines.batch.sandbox import (
    TASKS_DIR,
    Sandbox,
    parse_sandbox_name,
    write_atomic,
)
from fnrelay_endpoint.engines.batch.schedulers.base import (
    UNKNOWN,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
    make_scheduler,
    status_from_exit_file,
)
from fnrelay_endpoint.engines.batch.templating import (
    SCHEDULERS,
    TemplateRenderError,
    batch_context,
    job_name,
    render_batch_script,
)
from fnrelay_endpoint.engines.fair_queue import FairQueue
from fnrelay_endpoint.engines.interpreters import Interpreter, Interpreters
from fnrelay_endpoint.engines.resources import (
    FREE_TEXT_KEYS,
    ResourceSpecification,
    ResourceSpecificationError,
)
from fnrelay_endpoint.worker import cancelled_result
from fnrelay_wrappers.mpi import LAUNCHERS, Layout, launcher_argv

log = logging.getLogger(__name__)

#: The in-job entry point (see job.py).
JOB_ENTRY_MODULE = "fnrelay_endpoint.engines.batch.job"
#: Launcher used when the config names none.
#: OpenMPI reads Grid Engine's, LSF's and HTCondor's allocations itself; Flux starts ranks
#: with `flux run`.
DEFAULT_LAUNCHER = {"slurm": "srun", "pbspro": "mpich", "sge": "openmpi", "lsf": "openmpi",
                    "flux": "flux", "htcondor": "openmpi"}
#: Seconds between scheduler polls: one squeue/qstat for all jobs, but every endpoint of every
#: user polls, and batch jobs last minutes (Parsl's providers poll every 60 s).
DEFAULT_POLL_INTERVAL = 30.0
#: Seconds a job may be unknown to the scheduler, with no exit status in its sandbox and no
#: final state in the scheduler's accounting, before it is reported lost: NFS caches negative
#: lookups for a while, and PBS servers without job history forget a job as it ends.
DEFAULT_LOST_AFTER = 300.0
#: Pacing of submissions after a transient error (fnrelay.backoff: 1 s, 2 s, 4 s ... 2 min).
SUBMIT_BACKOFF_BASE = 1.0
SUBMIT_BACKOFF_CAP = 120.0
#: Exception type named in results of jobs that failed as jobs (not as Python calls).
FAILURE_TYPE = "fnrelay_endpoint.BatchJobFailed"
#: `max_workers` is accepted and ignored: the scheduler decides how many jobs run at once.
CONFIG_KEYS = frozenset({"type", "scheduler", "template", "defaults", "allowed_free_text",
                         "launcher", "poll_interval", "python", "scheduler_timeout",
                         "lost_after", "max_workers", "max_pending", "max_jobs",
                         "pack_window", interpreters.KEY, pyenvs.KEY})
#: Schedulers whose adapter submits job arrays (engine.pack_window).
ARRAY_SCHEDULERS = frozenset({"slurm", "pbspro"})


@dataclass(frozen=True)
class BatchConfig:
    """The batch engine's settings (the endpoint config's `engine` mapping), validated."""

    scheduler: str
    template: Path | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    allowed_free_text: frozenset[str] = frozenset()
    launcher: str | None = None
    launcher_settings: dict[str, Any] = field(default_factory=dict)
    poll_interval: float = DEFAULT_POLL_INTERVAL
    python: str = sys.executable
    scheduler_timeout: float = 60.0
    lost_after: float = DEFAULT_LOST_AFTER
    #: Seconds a job may stay queued before its task fails; None: no limit.
    max_pending: float | None = None
    #: Jobs this endpoint keeps queued or running at once; None: no cap.
    max_jobs: int | None = None
    #: Seconds to gather tasks of one specification into a job array; None: one job each.
    pack_window: float | None = None
    #: A job's interpreter per Python version of its task ("3.12" -> path); `python` for others.
    python_interpreters: dict[str, str] = field(default_factory=dict)
    #: Environments made with uv for jobs (pyenvs.EnvSettings as a mapping); None: none.
    python_environments: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "engine") -> BatchConfig:
        """Check every key; errors are ConfigurationError naming ``engine.<key>``."""
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"{source}: must be a mapping")
        check.known_keys(config, CONFIG_KEYS, source, "engine.", "engine 'batch'")
        scheduler = check.one_of(config.get("scheduler"), "engine.scheduler", source, SCHEDULERS)
        template = config.get("template")
        if template is not None:
            template = Path(template).expanduser()
            if not template.is_file():
                raise ConfigurationError(f"{source}: 'engine.template' {str(template)!r} is not "
                                         "a readable file")
        allowed = check.subset(config.get("allowed_free_text"), "engine.allowed_free_text",
                               source, FREE_TEXT_KEYS)
        defaults = config.get("defaults") or {}
        try:
            ResourceSpecification.from_task(None, defaults, allowed, scheduler)
        except ResourceSpecificationError as e:
            raise ConfigurationError(f"{source}: 'engine.defaults': {e}") from None
        launcher, settings = _launcher(config.get("launcher", DEFAULT_LAUNCHER[scheduler]),
                                       source)
        return cls(
            scheduler=scheduler, template=template, defaults=dict(defaults),
            allowed_free_text=allowed, launcher=launcher, launcher_settings=settings,
            poll_interval=check.seconds(config.get("poll_interval", DEFAULT_POLL_INTERVAL),
                                        "engine.poll_interval", source),
            python=check.interpreter(config.get("python", sys.executable), "engine.python",
                                     source, here=True),
            scheduler_timeout=check.seconds(config.get("scheduler_timeout", 60.0),
                                            "engine.scheduler_timeout", source),
            lost_after=check.seconds(config.get("lost_after", DEFAULT_LOST_AFTER),
                                     "engine.lost_after", source),
            max_pending=check.seconds_or_null(config.get("max_pending"), "engine.max_pending",
                                              source, "no limit"),
            max_jobs=_max_jobs(config.get("max_jobs"), source),
            pack_window=_pack_window(config.get("pack_window"), scheduler, source),
            python_interpreters=interpreters.validate(config.get(interpreters.KEY), source),
            python_environments=pyenvs.EnvSettings.validate(config.get(pyenvs.KEY), source),
        )


def _pack_window(value: Any, scheduler: str, source: str) -> float | None:
    """`pack_window`: seconds, or null (no arrays); only where the adapter submits arrays."""
    window = check.seconds_or_null(value, "engine.pack_window", source, "no job arrays")
    if window is not None and scheduler not in ARRAY_SCHEDULERS:
        raise ConfigurationError(f"{source}: 'engine.pack_window' needs a scheduler with job "
                                 f"arrays ({', '.join(sorted(ARRAY_SCHEDULERS))}), "
                                 f"not {scheduler!r}")
    return window


def _max_jobs(value: Any, source: str) -> int | None:
    """`max_jobs`: a positive number of jobs, or null (no cap)."""
    if value is None:
        return None
    return check.integer(value, "engine.max_jobs", source, low=1, unit="jobs")


def _launcher(value: Any, source: str) -> tuple[str | None, dict[str, Any]]:
    """`launcher: srun` or ``{type: openmpi, oversubscribe: true}``; none/null: no launcher."""
    if value is None or value == "none":
        return None, {}
    if isinstance(value, str):
        kind, settings = value, {}
    elif isinstance(value, Mapping) and isinstance(value.get("type"), str):
        kind, settings = value["type"], {k: v for k, v in value.items() if k != "type"}
    else:
        raise ConfigurationError(f"{source}: 'engine.launcher' must be a launcher name or a "
                                 f"mapping with 'type', got {value!r}")
    if kind not in LAUNCHERS:
        raise ConfigurationError(f"{source}: 'engine.launcher' must be one of "
                                 f"{', '.join(sorted(LAUNCHERS))}, got {kind!r}")
    try:
        launcher_argv(kind, Layout(), None, **settings)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"{source}: 'engine.launcher' settings for {kind}: {e}") \
            from None
    return kind, settings


def is_mpi_function(serialized: str) -> bool:
    """True if a serialized function is an `fnrelay.MPIFunction`, without unpickling it.

    Such a task's worker runs on the host (outside container and conda), where the launcher
    is, and starts its ranks through FNRELAY_MPI_PREFIX, which enters the container per rank.
    """
    tag, _, data = serialized.partition("\n")
    if tag not in (TAG_DILL_CODE, TAG_DILL_DATA):
        return False
    try:
        strings = {arg for _, arg, _ in pickletools.genops(base64.b64decode(data))
                   if isinstance(arg, str)}
    except Exception:  # noqa: BLE001 - not a pickle we understand: a plain function
        return False
    return {"fnrelay.functions", "MPIFunction"} <= strings or \
        "fnrelay.functions MPIFunction" in strings


@dataclass
class _Job:
    """One task the engine owns, from submission to its reported result."""

    task_id: str
    sandbox: Sandbox
    task_group_id: str | None = None
    job_id: str | None = None
    attempt: int = 1
    reported: str = ""  # last status sent: "queued" | "running"
    unknown_since: float | None = None  # time.monotonic() when the scheduler forgot the job
    queued_since: float = field(default_factory=time.monotonic)
    arrived: float = field(default_factory=time.monotonic)
    clusters: str | None = None  # Slurm `clusters`: where find_by_name must look
    pack: str = ""  # with pack_window: tasks of equal `pack` may share an array
    cancel_requested: bool = False
    done: bool = False


class BatchEngine(Engine):
    """Runs each task as a batch job; see the module docstring."""

    name = "batch"

    def __init__(self, config: Mapping[str, Any], workdir: Path, on_result: ResultCallback,
                 on_status: StatusCallback, scheduler: Scheduler | None = None):
        super().__init__(on_result, on_status)
        self.config = config if isinstance(config, BatchConfig) else BatchConfig.from_dict(config)
        self.workdir = Path(workdir)
        self._versions = self._interpreters()
        envs = self.config.python_environments
        # Made on this host: the jobs' nodes must see the endpoint's directory (they see its
        # sandboxes already).
        self._envs = None if not envs else pyenvs.Environments(pyenvs.EnvSettings.of(envs),
                                                               self.workdir)
        self.scheduler = scheduler or make_scheduler(self.config.scheduler,
                                                     timeout=self.config.scheduler_timeout)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        # Tasks not submitted yet, in turn across submitters (one user's backlog does not
        # hold up another's lone task); the submitter waits on _changed for a new task, a
        # cancel, a finished job, the end of a back-off or shutdown.
        self._waiting = FairQueue()
        self._changed = threading.Condition(self._lock)
        self._retry_at = 0.0  # after a transient submission error: no sbatch before this
        self._backoff = Backoff(SUBMIT_BACKOFF_BASE, SUBMIT_BACKOFF_CAP)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def _interpreters(self) -> Interpreters | None:
        """The jobs' interpreters by version, each run once now (None: `python` runs all; its
        version is then known only if it is the endpoint's own)."""
        cfg = self.config
        if not cfg.python_interpreters and not cfg.python_environments:
            return None
        default = (interpreters.own() if cfg.python == sys.executable else
                   Interpreter(cfg.python, interpreters.probe(cfg.python)))
        # With environments to make, the interpreters need not hold fnrelay themselves.
        needs = "" if cfg.python_environments else JOB_ENTRY_MODULE
        return Interpreters.start(cfg.python_interpreters, default, needs=needs)

    def python_versions(self) -> list[str]:
        if self._versions is not None:
            return self._versions.versions()
        return [interpreters.own().version] if self.config.python == sys.executable else []

    @classmethod
    def validate_config(cls, config: dict[str, Any], source: str) -> dict[str, Any]:
        BatchConfig.from_dict(config, source)
        return dict(config)

    @classmethod
    def from_config(cls, config: dict[str, Any], workdir: Path, on_result: ResultCallback,
                    on_status: StatusCallback) -> BatchEngine:
        return cls(config, workdir, on_result, on_status)

    # --- Engine API ---------------------------------------------------------------------------
    def start(self) -> None:
        (self.workdir / TASKS_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
        attached = self._reattach()
        if attached:
            log.info("re-attached to %d batch job(s) from %s", attached, self.workdir)
        for target, name in ((self._submit_loop, "submitter"), (self._poll_loop, "poller")):
            t = threading.Thread(target=target, daemon=True, name=f"fnrelay-batch-{name}")
            t.start()
            self._threads.append(t)

    def submit(self, task: TaskMessage) -> None:
        try:
            python = self._job_target(task)
        except ValueError as e:
            self.on_result(refused_result(task, str(e)))
            return
        # An array shares one script, so one interpreter: its path is part of the pack.
        pack = "" if self.config.pack_window is None else \
            pack_key(task.resource_specification, is_mpi_function(task.function)) + \
            "\0" + python
        with self._lock:
            if task.task_id in self._jobs:
                return  # already submitted or re-attached: never twice
            try:
                sandbox = Sandbox.of(self.workdir, task.task_id, task.attempt)
            except ValueError as e:
                refused: str | None = str(e)
            else:
                refused = None
                self._jobs[task.task_id] = _Job(task.task_id, sandbox, task.task_group_id,
                                                attempt=task.attempt, pack=pack)
                self._waiting.append(task)
                self._changed.notify_all()
        if refused is not None:
            self.on_result(failed_result(task, FAILURE_TYPE, refused))

    def cancel(self, task_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None or job.done:
                return False
            job.cancel_requested = True
            self._changed.notify_all()  # a waiting task is settled by the submitter
        self._wake.set()  # the poller sends scancel
        return True

    def shutdown(self) -> None:
        """Stop submitting and polling; submitted jobs keep running and are re-attached."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
        for t in self._threads:
            t.join(timeout=self.config.scheduler_timeout + 10)

    def info(self) -> dict[str, Any]:
        by_state: dict[str, int] = {"submitted": 0, "queued": 0, "running": 0}
        with self._lock:
            jobs = sum(1 for j in self._jobs.values() if j.job_id)
            waiting = len(self._waiting)
            for j in self._jobs.values():
                if j.job_id and not j.done:  # "submitted": the scheduler has not said yet
                    key = j.reported or "submitted"
                    by_state[key] = by_state.get(key, 0) + 1
        return {"engine": self.name, "scheduler": self.config.scheduler, "jobs": jobs,
                "submitting": waiting, "jobs_by_state": by_state,
                "python_versions": self.python_versions()}

    # --- re-attach ----------------------------------------------------------------------------
    def _reattach(self) -> int:
        """Watch every sandbox with a job id and no reported result (a task's latest attempt)."""
        found: dict[str, _Job] = {}
        for path in sorted((self.workdir / TASKS_DIR).iterdir()):
            sandbox = Sandbox(path)
            job_id = sandbox.job_id()
            if job_id is None or sandbox.final_file.exists():
                continue
            task_id, attempt = parse_sandbox_name(path.name)
            if task_id in found and found[task_id].attempt > attempt:
                continue
            try:
                group = sandbox.read_task().task_group_id
            except (OSError, ValueError, TypeError):
                group = None
            found[task_id] = _Job(task_id, sandbox, group, job_id, attempt)
        with self._lock:
            self._jobs.update(found)
        return len(found)

    # --- submitter thread ---------------------------------------------------------------------
    def _submit_loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            with self._lock:
                pairs = [(job, task) for task in batch
                         if (job := self._jobs.get(task.task_id)) is not None and not job.done]
            try:
                self._submit_batch(pairs)
            except Exception as e:  # noqa: BLE001 - one bad task must not stop the others
                log.exception("batch submission of %d task(s) failed", len(pairs))
                for job, task in pairs:
                    self._finish(job, result=failed_result(task, FAILURE_TYPE,
                                                           f"batch submission failed: {e}"))

    def _next_batch(self) -> list[TaskMessage] | None:
        """The next tasks to handle together, once submitting is allowed; None at shutdown.

        A cancelled task is handed out at once, alone (it is settled without a job). The others
        wait while a back-off after a transient submission error runs, while `max_jobs` jobs
        are queued or running (a finished job notifies), and for `pack_window` seconds after
        the first one arrived, so that tasks with the same specification share an array.
        """
        with self._changed:
            while not self._stop.is_set():
                for task in self._waiting:
                    job = self._jobs.get(task.task_id)
                    if job is None or job.done or job.cancel_requested:
                        self._waiting.remove(task)
                        return [task]
                pause = self._retry_at - time.monotonic()
                if self._waiting and pause <= 0 and not self._at_cap():
                    pause = self._packing_pause()
                    if pause <= 0:
                        return self._take_batch()
                self._changed.wait(pause if self._waiting and pause > 0 else None)
            return None

    def _packing_pause(self) -> float:
        """Seconds until the first waiting task's pack window closes (call with the lock)."""
        window = self.config.pack_window
        job = self._jobs.get(self._waiting.peek().task_id)
        if window is None or job is None:
            return 0.0
        return job.arrived + window - time.monotonic()

    def _take_batch(self) -> list[TaskMessage]:
        """The first waiting task and, with `pack_window`, every other one of the same
        specification that fits under `max_jobs` and an array's size (call with the lock)."""
        first = self._waiting.popleft()
        if self.config.pack_window is None:
            return [first]
        room = MAX_ELEMENTS - 1
        if self.config.max_jobs is not None:
            room = min(room, self.config.max_jobs - self._active() - 1)
        key = self._pack_of(first)
        return [first] + self._waiting.take(lambda task: self._pack_of(task) == key,
                                            max(0, room))

    def _pack_of(self, task: TaskMessage) -> str | None:
        job = self._jobs.get(task.task_id)
        return job.pack if job is not None else None

    def _active(self) -> int:
        """Jobs queued or running (call with the lock held)."""
        return sum(1 for j in self._jobs.values() if j.job_id is not None and not j.done)

    def _at_cap(self) -> bool:
        """True if `max_jobs` jobs are queued or running (call with the lock held)."""
        return self.config.max_jobs is not None and self._active() >= self.config.max_jobs

    def _defer(self, tasks: list[TaskMessage], error: SchedulerError) -> None:
        """Put tasks back in front after a transient error; no submission until the back-off."""
        pause = self._backoff.next_delay()
        log.warning("batch submission of %d task(s) failed for now, retrying in %.1f s: %s",
                    len(tasks), pause, error)
        with self._changed:
            self._retry_at = time.monotonic() + pause
            self._waiting.push_front(tasks)

    def _refused(self, job: _Job, task: TaskMessage, error: SchedulerError) -> None:
        self._finish(job, result=failed_result(task, FAILURE_TYPE,
                                               f"batch job submission refused: {error}",
                                               details={"scheduler_error": True}))

    def _submit_batch(self, pairs: list[tuple[_Job, TaskMessage]]) -> None:
        """Settle or re-attach what can be; submit the rest as one job or one array."""
        fresh = [(job, task) for job, task in pairs if self._needs_job(job, task)]
        if len(fresh) == 1:
            self._submit_one(*fresh[0])
        elif fresh:
            self._submit_array(fresh)

    def _needs_job(self, job: _Job, task: TaskMessage) -> bool:
        """Settle or re-attach a task from its sandbox (module docstring); else write its
        script and return True."""
        sandbox = job.sandbox
        final = sandbox.final()
        if final is not None:  # reported before a crash, never journaled: report again
            self._finish(job, result=final, record=False)
            return False
        job_id = sandbox.job_id()
        if job_id is not None:
            self._watch(job, job_id, announce=False)
            return False
        if job.cancel_requested:
            self._finish(job, result=cancelled_result(task.task_id, task.task_group_id,
                                                      "cancelled before submission"))
            return False
        try:
            job.clusters = self._prepare(sandbox, task).clusters
        except (ResourceSpecificationError, TemplateRenderError, ValueError) as e:
            self._finish(job, result=refused_result(task, str(e)))
            return False
        except pyenvs.PythonEnvironmentError as e:
            self._finish(job, result=failed_result(
                task, pyenvs.ENVIRONMENT_ERROR_TYPE,
                f"cannot make the task's Python environment: {e}"))
            return False
        if sandbox.ran():  # a job ran here but its id was never journaled: settle from files
            self._watch(job, "", announce=False)
            return False
        return True

    def _submit_one(self, job: _Job, task: TaskMessage) -> None:
        """Submit one prepared task as its own job (unless one of its name exists)."""
        name = job_name(task.task_id, job.attempt)
        try:
            job_id = self.scheduler.find_by_name(name, job.clusters) or \
                self.scheduler.submit(job.sandbox.script, name, job.sandbox.path)
        except SchedulerError as e:
            if self.scheduler.is_transient(e):
                self._defer([task], e)
            else:
                self._refused(job, task, e)
            return
        self._backoff.reset()
        job.sandbox.write_job_id(job_id)
        self._watch(job, job_id, announce=True)

    def _submit_array(self, fresh: list[tuple[_Job, TaskMessage]]) -> None:
        """Submit prepared tasks of one specification as one job array, one element each."""
        first = fresh[0][1].task_id
        directory = self.workdir / ARRAYS_DIR / first
        script = write_array(directory, fresh[0][0].sandbox.script.read_text(),
                             [job.sandbox.path for job, _ in fresh],
                             self.scheduler.array_index_variable)
        output = str(directory / self.scheduler.array_output_name)
        try:
            ids = self.scheduler.submit_array(script, f"fnrelay-array-{first}", directory,
                                              len(fresh), output)
        except SchedulerError as e:
            if self.scheduler.is_transient(e):
                self._defer([task for _, task in fresh], e)
            else:
                for job, task in fresh:
                    self._refused(job, task, e)
            return
        self._backoff.reset()
        for (job, _), job_id in zip(fresh, ids, strict=True):
            job.sandbox.write_job_id(job_id)
            self._watch(job, job_id, announce=True)

    def _prepare(self, sandbox: Sandbox, task: TaskMessage) -> ResourceSpecification:
        """Validate, make the sandbox, write the task and the script; the task's specification."""
        cfg = self.config
        spec = ResourceSpecification.from_task(task.resource_specification, cfg.defaults,
                                               cfg.allowed_free_text, cfg.scheduler)
        sandbox.create()
        path = str(sandbox.path.resolve())
        chain = spec.launch_chain(path, cfg.launcher, cfg.launcher_settings)
        mpi = is_mpi_function(task.function)
        # Inside a conda env or an image, the env's or image's python3, not the endpoint's path.
        python = self._job_python(task)
        exe = chain.interpreter(python, wrap=not mpi)
        # Another version ignores the endpoint's PYTHONPATH (-E), which a job inherits: it
        # names modules installed for the endpoint's own version.
        flags = ["-E"] if exe == python and python != cfg.python else []
        command = [exe, *flags, "-m", JOB_ENTRY_MODULE, path]
        context = batch_context(cfg.scheduler, task.task_id, path, spec, chain, command,
                                launch=False, wrap=not mpi, attempt=task.attempt)
        script = render_batch_script(cfg.scheduler, context, cfg.template)
        sandbox.write_task(task)
        write_atomic(sandbox.script, script)
        sandbox.script.chmod(0o700)
        return spec

    def _placement(self, task: TaskMessage) -> Interpreter | pyenvs.EnvSpec | None:
        """The interpreter of the task's version or an environment to make (None:
        `engine.python`); ValueError: refused."""
        if self._versions is None:
            return pyenvs.place(None, task.user_endpoint_config, Interpreters({}), None)
        return pyenvs.place(task.python_version, task.user_endpoint_config, self._versions,
                            self._envs, globus=task.format == FORMAT_GLOBUS)

    def _job_target(self, task: TaskMessage) -> str:
        """What names the job's interpreter without making it (an environment's name)."""
        where = self._placement(task)
        if isinstance(where, pyenvs.EnvSpec):
            return where.name()
        return self.config.python if where is None else where.path

    def _job_python(self, task: TaskMessage) -> str:
        """The job's interpreter: the task's version's, its environment's (made now, once:
        the submitter waits), else `engine.python`."""
        where = self._placement(task)
        if isinstance(where, pyenvs.EnvSpec):
            assert self._envs is not None
            return self._envs.ensure(where).path
        return self.config.python if where is None else where.path

    def _watch(self, job: _Job, job_id: str, announce: bool) -> None:
        with self._lock:
            job.job_id = job_id
            job.queued_since = time.monotonic()
            if announce:
                job.reported = "queued"
        if announce:
            self.on_status(StatusUpdate(task_id=job.task_id,
                                        status=TaskState.WAITING_FOR_NODES.value,
                                        detail=f"{self.config.scheduler} job {job_id}"))
        self._wake.set()

    # --- poller thread ------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll_once()
            except Exception:  # noqa: BLE001 - keep watching whatever one poll hit
                log.exception("batch poller error")
            self._wake.wait(self.config.poll_interval)
            self._wake.clear()

    def _poll_once(self) -> None:
        with self._lock:
            cancels = [j for j in self._jobs.values()
                       if j.cancel_requested and j.job_id is not None and not j.done]
            watched = [j for j in self._jobs.values()
                       if j.job_id is not None and not j.done and not j.cancel_requested]
        for job in cancels:
            self._cancel_job(job)
        if not watched:
            return
        ids = [j.job_id for j in watched if j.job_id]  # "": its id was never journaled
        try:
            statuses = self.scheduler.status(ids) if ids else {}
        except SchedulerError as e:
            log.warning("cannot get the status of %d batch job(s): %s", len(ids), e)
            return
        vanished = [j.job_id for j in watched if j.job_id
                    and statuses.get(j.job_id, UNKNOWN).state is JobState.UNKNOWN
                    and _from_sandbox(j) is None]
        history = self.scheduler.history(vanished) if vanished else {}
        for job in watched:
            self._observe(job, statuses.get(job.job_id or "", UNKNOWN),
                          history.get(job.job_id or ""))

    def _cancel_job(self, job: _Job) -> None:
        if job.job_id:
            try:
                self.scheduler.cancel(job.job_id)
            except SchedulerError as e:
                log.warning("cannot cancel batch job %s of task %s (will retry): %s",
                            job.job_id, job.task_id, e)
                return
        self._finish(job, result=cancelled_result(
            job.task_id, job.task_group_id, f"cancelled ({self.config.scheduler} job "
            f"{job.job_id or 'unknown'})"))

    def _observe(self, job: _Job, status: JobStatus, history: JobStatus | None = None) -> None:
        """Turn one job's status into a status update or its result."""
        if status.state is JobState.UNKNOWN:
            forgotten = self._forgotten(job, history)
            if forgotten is None:
                return
            status = forgotten
        else:
            job.unknown_since = None
        if status.state is JobState.QUEUED and self._pending_too_long(job):
            why = f"still pending after {self.config.max_pending:g} s (engine.max_pending)"
            status = JobStatus(JobState.HELD, status.native_state, None,
                               f"{why}: {status.reason}" if status.reason else why)
        if status.state is JobState.HELD:
            self._give_up(job, status)
        elif status.state is JobState.QUEUED:
            self._report(job, "queued", TaskState.WAITING_FOR_NODES, status)
        elif status.state is JobState.RUNNING:
            self._report(job, "running", TaskState.RUNNING, status)
        else:
            self._finish(job, status=status)

    def _pending_too_long(self, job: _Job) -> bool:
        limit = self.config.max_pending
        return limit is not None and time.monotonic() - job.queued_since > limit

    def _give_up(self, job: _Job, status: JobStatus) -> None:
        """Cancel a job that will not start by itself and fail its task with the reason."""
        try:
            self.scheduler.cancel(job.job_id or "")
        except SchedulerError as e:
            log.warning("cannot cancel held batch job %s of task %s (will retry): %s",
                        job.job_id, job.task_id, e)
            return
        self._finish(job, status=status)

    def _forgotten(self, job: _Job, history: JobStatus | None) -> JobStatus | None:
        """Status of a job the scheduler no longer knows (None: wait): from its sandbox, else
        from the scheduler's accounting (`history`), else lost once `lost_after` has passed.

        A completed job without an exit status is waited for too: its files may be late."""
        found = _from_sandbox(job)
        if found is not None:
            return found
        now = time.monotonic()
        if job.unknown_since is None:
            job.unknown_since = now
        if history is not None and history.state is not JobState.COMPLETED:
            return history
        if now - job.unknown_since < self.config.lost_after:
            return None
        return history or JobStatus(
            JobState.INFRASTRUCTURE, "", None,
            f"the scheduler no longer knows job {job.job_id or '(unknown id)'} and it left no "
            f"exit status within {self.config.lost_after:g}s")

    def _report(self, job: _Job, key: str, state: TaskState, status: JobStatus) -> None:
        if job.reported == key:
            return
        job.reported = key
        detail = f"{self.config.scheduler} job {job.job_id} {status.native_state}".strip()
        if status.reason:
            detail += f" ({status.reason})"
        self.on_status(StatusUpdate(task_id=job.task_id, status=state.value, detail=detail))

    # --- results ------------------------------------------------------------------------------
    def _finish(self, job: _Job, status: JobStatus | None = None,
                result: ResultMessage | None = None, record: bool = True) -> None:
        """Report the task's result exactly once, after recording it in the sandbox."""
        with self._lock:
            if job.done:
                return
            job.done = True
        if result is None:
            result = self._job_result(job, status or JobStatus(JobState.UNKNOWN))
        if record and job.sandbox.path.is_dir():
            try:
                job.sandbox.write_final(result)
            except OSError as e:
                log.warning("cannot record the result of task %s: %s", job.task_id, e)
        with self._changed:
            self._jobs.pop(job.task_id, None)
            self._changed.notify_all()  # a slot under max_jobs is free
        self.on_result(result)

    def _job_result(self, job: _Job, status: JobStatus) -> ResultMessage:
        """The worker's result if it wrote one, else a failure built from the job's state."""
        if status.state is JobState.CANCELLED:
            return cancelled_result(job.task_id, job.task_group_id,
                                    f"cancelled ({self.config.scheduler} job {job.job_id})")
        result = job.sandbox.result()
        if result is not None:
            result.details.setdefault("batch_job_id", job.job_id)
            result.details.update(job.sandbox.output_details())
            return result
        tails = job.sandbox.output_tails()
        details: dict[str, Any] = {
            "batch_job_id": job.job_id, "scheduler_state": status.native_state,
            "exit_code": status.exit_code, "stdout_tail": tails["stdout"],
            "stderr_tail": tails["stderr"],
        }
        what = f"{self.config.scheduler} job {job.job_id or '(unknown id)'}"
        if status.state is JobState.INFRASTRUCTURE:
            details["infrastructure"] = True
            reason = f"infrastructure failure ({status.reason or status.native_state}) of {what}"
        elif status.state is JobState.HELD:
            details["held"] = True
            reason = f"{what} did not start: {status.reason or status.native_state}"
        elif status.state is JobState.COMPLETED:
            reason = f"{what} finished without writing a result"
        else:
            reason = f"{what} failed: {status.reason or status.native_state or 'failed'}"
        message = reason
        if tails["stderr"]:
            message += "\nstderr (last lines):\n" + tails["stderr"]
        traceback = f"stdout (last lines):\n{tails['stdout']}\n\nstderr (last lines):\n" \
                    f"{tails['stderr']}\n"
        return failed_result(job, FAILURE_TYPE, message, details=details, traceback=traceback)


def _from_sandbox(job: _Job) -> JobStatus | None:
    """The final status a job left in its sandbox (exit status or result), if any."""
    from_file = status_from_exit_file(job.sandbox.path)
    if from_file is not None:
        return from_file
    if job.sandbox.result_file.exists():
        return JobStatus(JobState.COMPLETED, "result file", 0)
    return None


ENGINE = BatchEngine
