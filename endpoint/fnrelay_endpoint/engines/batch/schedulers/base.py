"""What the batch engine needs from a batch scheduler: submit, find, watch, cancel.

One adapter per scheduler (`slurm.py`, `pbspro.py`) turns command-line tools into this interface.
Adapters are stateless apart from the jobs they cancelled themselves, so an endpoint restart can
re-attach to its jobs by id, or find them by name when the id was never journaled.

A job that the scheduler has forgotten (Slurm purges finished jobs after MinJobAge, and a site
may have no accounting database) is reported as `unknown`; the engine then reads the exit
status the job script wrote into its sandbox (`read_exit_status`).
"""

from __future__ import annotations

import abc
import enum
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnrelay.errors import FnRelayError
from fnrelay.wire.names import EXIT_STATUS_FILE

#: Default timeout of one scheduler command, in seconds (slurmctld can be slow when busy).
COMMAND_TIMEOUT = 60.0


class JobState(str, enum.Enum):
    """A job's state as the batch engine sees it, whatever the scheduler."""

    QUEUED = "queued"  # task: waiting-for-nodes
    HELD = "held"  # queued, but held or never runnable: the engine cancels it and fails the task
    RUNNING = "running"
    COMPLETED = "completed"  # exit 0
    FAILED = "failed"  # nonzero exit, walltime, memory, cancelled by the scheduler/admin
    CANCELLED = "cancelled"  # cancelled through this adapter (Client.cancel)
    INFRASTRUCTURE = "infrastructure"  # node/boot failure, preemption: retry elsewhere
    UNKNOWN = "unknown"  # the scheduler no longer knows the job: read the exit-status file

    @property
    def terminal(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING, JobState.UNKNOWN)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class JobStatus:
    """One job's state; `native_state` and `reason` are the scheduler's own words."""

    state: JobState
    native_state: str = ""
    exit_code: int | None = None
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.state.terminal


UNKNOWN = JobStatus(JobState.UNKNOWN)


class SchedulerError(FnRelayError):
    """A scheduler command failed; the message holds the command and its stderr."""

    def __init__(self, message: str, argv: Sequence[str] = (), returncode: int | None = None,
                 stderr: str = "", transient: bool = False):
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        #: Known to pass by itself (the command hung): worth retrying whatever it printed.
        self.transient = transient


class Scheduler(abc.ABC):
    """Adapter to one batch scheduler's command-line tools."""

    #: Name in the endpoint config (`engine.scheduler`).
    name: str = "scheduler"
    #: Prefix every directive line of a job script starts with.
    directive_prefix: str = "#"
    #: Submission errors that pass by themselves (a busy controller, a per-user limit on
    #: queued jobs): the engine backs off and submits again instead of failing the task.
    transient_errors: re.Pattern[str] = re.compile(
        r"timed out|connection refused|temporarily unavailable", re.IGNORECASE)

    def __init__(self, timeout: float = COMMAND_TIMEOUT, env: dict[str, str] | None = None):
        self.timeout = timeout
        self.env = env
        self._cancelled: set[str] = set()

    @abc.abstractmethod
    def submit(self, script_path: str | os.PathLike, job_name: str,
               cwd: str | os.PathLike) -> str:
        """Submit the job script; its job id. Raises SchedulerError if refused."""

    #: True if the adapter implements `submit_array`; the variable holding an element's index.
    supports_arrays: bool = False
    array_index_variable: str = ""
    #: File name, in the array's directory, of each element's own scheduler output: the
    #: scheduler's placeholders name the element.
    array_output_name: str = ""

    def submit_array(self, script_path: str | os.PathLike, job_name: str,
                     cwd: str | os.PathLike, count: int, output: str) -> list[str]:
        """Submit `script_path` as a job array of `count` elements; each element's own id.

        Each element reads its index from the scheduler's environment; `output` is where the
        array's own stdout and stderr go (each element's task redirects its own).
        """
        raise SchedulerError(f"job arrays are not supported for {self.name}")

    @abc.abstractmethod
    def find_by_name(self, job_name: str, clusters: str | None = None) -> str | None:
        """Id of this user's job named `job_name` that the scheduler still knows, else None.

        Used before (re)submitting after a crash, so that no task is submitted twice;
        `clusters` (Slurm) are where the task's job may have gone.
        """

    @abc.abstractmethod
    def status(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Status of every job in `job_ids` with as few commands as possible.

        Every id asked for is in the answer; a job the scheduler has forgotten is UNKNOWN.
        """

    def history(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Final states of jobs `status` no longer knows, from the scheduler's accounting
        (Slurm's sacct); only the ids it knows. Never raises: without accounting, {}."""
        return {}

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job; a finished or unknown job is not an error."""

    def is_transient(self, error: SchedulerError) -> bool:
        """True if submitting again later may succeed; False for a permanent refusal."""
        return error.transient or bool(self.transient_errors.search(str(error)))

    def was_cancelled_here(self, job_id: str) -> bool:
        """True if this adapter cancelled the job (so it ends `cancelled`, not `failed`)."""
        return job_id in self._cancelled

    # --- helpers for adapters ---------------------------------------------------------------
    def run(self, argv: Sequence[str], cwd: str | os.PathLike | None = None,
            ok_codes: Iterable[int] = (0,)) -> subprocess.CompletedProcess:
        """Run one command (argv list, no shell); SchedulerError if it fails or hangs."""
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise SchedulerError(f"{argv[0]} not found: is {self.name} installed and on PATH?",
                                 argv) from exc
        except subprocess.TimeoutExpired as exc:
            raise SchedulerError(f"{' '.join(argv)} did not answer within {self.timeout:g}s",
                                 argv, transient=True) from exc
        if proc.returncode not in set(ok_codes):
            raise SchedulerError(
                f"{' '.join(argv)} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip() or 'no output'}",
                argv, proc.returncode, proc.stderr)
        return proc


def read_exit_status(sandbox: str | os.PathLike) -> int | None:
    """Exit status the job script wrote into `sandbox`, or None if there is none (yet)."""
    try:
        text = (Path(sandbox) / EXIT_STATUS_FILE).read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def status_from_exit_file(sandbox: str | os.PathLike) -> JobStatus | None:
    """Final status of a job the scheduler forgot, from its sandbox; None if it left no trace."""
    code = read_exit_status(sandbox)
    if code is None:
        return None
    if code == 0:
        return JobStatus(JobState.COMPLETED, "exit_status file", 0)
    return JobStatus(JobState.FAILED, "exit_status file", code, f"exit status {code}")


def decode_wait_status(raw: int) -> tuple[int, str]:
    """(exit code, reason) from a POSIX wait status: 128+N and 'killed by signal N' if signalled."""
    signal_no = raw & 0x7F
    if signal_no:
        return 128 + signal_no, f"killed by signal {signal_no}"
    return (raw >> 8) & 0xFF, ""


def make_scheduler(kind: str, **options: Any) -> Scheduler:
    """The adapter named `kind` ('slurm', 'pbspro', 'sge', 'lsf', 'flux', 'htcondor')."""
    if kind == "slurm":
        from fnrelay_endpoint.engines.batch.schedulers.slurm import SlurmScheduler

        return SlurmScheduler(**options)
    if kind in ("pbspro", "pbs", "openpbs"):
        from fnrelay_endpoint.engines.batch.schedulers.pbspro import PBSProScheduler

        return PBSProScheduler(**options)
    if kind in ADAPTERS:
        import importlib

        module, cls = ADAPTERS[kind]
        adapter: type[Scheduler] = getattr(importlib.import_module(
            f"fnrelay_endpoint.engines.batch.schedulers.{module}"), cls)
        return adapter(**options)
    raise SchedulerError(f"unknown scheduler {kind!r}: expected 'slurm', 'pbspro' or one of "
                         f"{', '.join(ADAPTERS)}")


#: The other adapters, by config name: (module beside this one, class).
ADAPTERS = {"sge": ("sge", "SGEScheduler"), "lsf": ("lsf", "LSFScheduler"),
            "flux": ("flux", "FluxScheduler"), "htcondor": ("htcondor", "HTCondorScheduler")}
