"""Flux (flux-core 0.6x) adapter: `flux batch`, `flux jobs -o`, `flux cancel`.

A per-task job is a `flux batch` script: a Flux instance of its own on the allocated nodes, in
which the launcher `flux run` starts ranks. `#flux:` lines are flux-batch(1)'s submission
directives. `flux batch` prints the job id (F58 by default, "ƒ" or "f" by locale); ids are
compared in one spelling. `flux jobs -a -n -o FORMAT ids` lists pending, running and inactive
jobs; states (RFC 21) DEPEND, PRIORITY, SCHED (waiting), RUN, CLEANUP (running), INACTIVE
with a result COMPLETED, FAILED, CANCELED or TIMEOUT (flux-jobs(1), JOB STATUS).

A job of urgency 0 (`flux job urgency ID hold`, or `flux batch --urgency=0`; flux-job(1):
hold 0, default 16, expedite 31) gets priority 0 and is never scheduled: it stays pending until
someone sets another urgency. Such a job is HELD: the engine cancels it and fails the task.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fnrelay_endpoint.engines.batch.schedulers.base import (
    UNKNOWN,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
)

FIELDS = ("id.f58", "state", "result", "returncode", "exception.type", "exception.note",
          "urgency", "name")
JOBS_FORMAT = "|".join("{" + f + "}" for f in FIELDS)
QUEUED = {"DEPEND", "PRIORITY", "SCHED", "NEW"}
#: FLUX_JOB_URGENCY_HOLD: a pending job of this urgency never starts by itself.
URGENCY_HOLD = 0
#: Submission errors that pass by themselves: no broker to talk to yet or any more ("ERROR:
#: Unable to connect to Flux: broker socket /run/flux/local was not found", flux-core 0.6x
#: docs, "Flux URIs"), a broker restarting (connection refused or reset, EAGAIN), and
#: flux-accounting's per-user limit ("flux-job: user has max active jobs", flux-accounting
#: 0.3x guide, "Limits") while the user's jobs drain.
TRANSIENT_ERRORS = re.compile(
    r"unable to connect to flux|connection refused|connection reset|timed out"
    r"|resource temporarily unavailable|max active jobs", re.IGNORECASE)
RUNNING = {"RUN", "CLEANUP"}


def canonical(job_id: str) -> str:
    """One spelling of an F58 id: "ƒ" and its ASCII stand-in "f" are the same id."""
    return job_id.strip().replace("ƒ", "f")


@dataclass(frozen=True)
class FluxJob:
    job_id: str
    state: str
    result: str
    returncode: int | None
    exception_type: str
    exception_note: str
    name: str
    urgency: int | None = None


def parse_flux_jobs(text: str) -> dict[str, FluxJob]:
    """{canonical id: job} from `flux jobs -n -o JOBS_FORMAT` output."""
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|", len(FIELDS) - 1)
        if len(parts) != len(FIELDS) or not parts[0].strip():
            continue
        job_id, state, result, code, etype, note, urgency, name = (p.strip() for p in parts)
        jobs[canonical(job_id)] = FluxJob(canonical(job_id), state.upper(), result.upper(),
                                          _int(code), etype, note, name, _int(urgency))
    return jobs


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def map_job(job: FluxJob, cancelled_here: bool = False) -> JobStatus:
    """Engine status of one job of flux jobs."""
    if job.state in QUEUED and job.urgency == URGENCY_HOLD and not cancelled_here:
        return JobStatus(JobState.HELD, job.state, None,
                         "held by Flux: urgency 0 (flux job urgency ID hold); it is never "
                         "scheduled until its urgency is raised")
    if job.state in QUEUED:
        return JobStatus(JobState.QUEUED, job.state)
    if job.state in RUNNING or job.state != "INACTIVE":
        return JobStatus(JobState.RUNNING, job.state)
    native, code = job.result, job.returncode
    note = f"{job.exception_type}: {job.exception_note}".strip(": ")
    if native == "COMPLETED":
        return JobStatus(JobState.COMPLETED, native, 0)
    if native == "CANCELED":
        if cancelled_here:
            return JobStatus(JobState.CANCELLED, native, code, "cancelled on request")
        return JobStatus(JobState.FAILED, native, code, f"cancelled by someone else: {note}")
    if native == "TIMEOUT":
        return JobStatus(JobState.FAILED, native, code, "walltime exceeded (TIMEOUT)")
    if job.exception_type and job.exception_type != "exec":
        # An exception before or around the job (alloc, a lost node): may work elsewhere.
        return JobStatus(JobState.INFRASTRUCTURE, native, code, note)
    why = f"killed by signal {code - 128}" if code is not None and code > 128 \
        else f"exit status {code}"
    return JobStatus(JobState.FAILED, native, code, f"{why}: {note}" if note else why)


class FluxScheduler(Scheduler):
    """Jobs of the endpoint's user in the Flux instance FLUX_URI names (or the system one)."""

    name = "flux"
    directive_prefix = "#flux:"
    transient_errors = TRANSIENT_ERRORS

    def submit(self, script_path: str | os.PathLike, job_name: str,
               cwd: str | os.PathLike) -> str:
        out = self.run(["flux", "batch", f"--job-name={job_name}", str(script_path)],
                       cwd=cwd).stdout.strip()
        job_id = out.splitlines()[-1].strip() if out else ""
        if not job_id or " " in job_id:
            raise SchedulerError(f"flux batch printed no job id: {out!r}", ["flux", "batch"])
        return canonical(job_id)

    def find_by_name(self, job_name: str, clusters: str | None = None) -> str | None:
        out = self.run(["flux", "jobs", "-a", "-n", f"--name={job_name}", "-o",
                        JOBS_FORMAT]).stdout
        jobs = parse_flux_jobs(out)
        return next(iter(jobs), None)  # flux jobs lists the newest first

    def status(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(canonical(str(j)) for j in job_ids))
        result = {job_id: UNKNOWN for job_id in wanted}
        if not wanted:
            return result
        proc = self.run(["flux", "jobs", "-a", "-n", "-o", JOBS_FORMAT, *wanted],
                        ok_codes=(0, 1))  # 1: some id is unknown to the instance
        for job_id, job in parse_flux_jobs(proc.stdout).items():
            if job_id in result:
                result[job_id] = map_job(job, self.was_cancelled_here(job_id))
        return result

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(canonical(job_id))
        proc = self.run(["flux", "cancel", job_id], ok_codes=range(256))
        if proc.returncode != 0 and "inactive" not in proc.stderr and \
                "unknown" not in proc.stderr:
            raise SchedulerError(f"flux cancel {job_id} failed: {proc.stderr.strip()}",
                                 ["flux", "cancel", job_id], proc.returncode, proc.stderr)

    def was_cancelled_here(self, job_id: str) -> bool:
        return canonical(job_id) in self._cancelled
