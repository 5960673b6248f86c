"""HTCondor (23.x) adapter: `condor_submit -terse`, `condor_q`/`condor_history -af:jt`, condor_rm.

HTCondor reads no directives from a job script: it takes a submit description. fnrelay's
htcondor template writes that description's commands into the script as `#HTCONDOR <command>`
lines (fnrelay's convention, not HTCondor's), and `submit` turns them into `<script>.sub`
beside the script, with the script as the executable, then runs `condor_submit -terse`, which
prints "<first id> - <last id>" ("123.0 - 123.0").

condor_q lists jobs still in the queue, condor_history those that left it. JobStatus codes
(HTCondor manual, "Job ClassAd Attributes"): 1 Idle, 2 Running, 3 Removed, 4 Completed,
5 Held, 6 Transferring Output, 7 Suspended. A held job never runs until someone releases it:
it is failed with its HoldReason and removed, so a later condor_release cannot run a task
already reported failed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fnrelay_endpoint.engines.batch.schedulers.base import (
    UNKNOWN,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
)

PREFIX = "#HTCONDOR "
ATTRIBUTES = ("JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "JobBatchName",
              "HoldReason")
STATUS_NAMES = {1: "Idle", 2: "Running", 3: "Removed", 4: "Completed", 5: "Held",
                6: "TransferringOutput", 7: "Suspended"}
#: condor_submit refusals that pass by themselves: the schedd unreachable, and its
#: MAX_JOBS_SUBMITTED / MAX_JOBS_PER_OWNER limits (condor_submit's own messages) while the
#: queue drains.
TRANSIENT_ERRORS = re.compile(
    r"timed out|connection refused|temporarily unavailable"
    r"|failed to connect to local queue manager|can't find address of local schedd"
    r"|number of submitted jobs would exceed", re.IGNORECASE)
_TERSE = re.compile(r"^\s*(\d+\.\d+)\s*-\s*(\d+\.\d+)\s*$", re.MULTILINE)


def submit_description(script: str, script_path: str, job_name: str, cwd: str) -> str:
    """condor_submit's description for the rendered `script` (its `#HTCONDOR` lines)."""
    commands = [line[len(PREFIX):].strip() for line in script.splitlines()
                if line.startswith(PREFIX)]
    return "\n".join([
        "universe = vanilla", f"executable = {script_path}", f"initialdir = {cwd}",
        f"batch_name = {job_name}", f"log = {cwd}/htcondor.log", *commands, "queue 1", ""])


def parse_terse(text: str) -> str:
    """The job id of `condor_submit -terse` ("123.0 - 123.0": one job)."""
    m = _TERSE.search(text)
    if m is None or m.group(1) != m.group(2):
        raise SchedulerError(f"condor_submit printed no single job id: {text.strip()!r}",
                             ["condor_submit"])
    return m.group(1)


@dataclass(frozen=True)
class CondorJob:
    job_id: str
    status: int | None
    exit_code: int | None
    by_signal: bool
    signal: int | None
    name: str
    hold_reason: str


def parse_af(text: str) -> dict[str, CondorJob]:
    """{id: job} of `condor_q`/`condor_history -af:jt <ATTRIBUTES>` (tab-separated, the job id
    first; an attribute a job lacks prints as `undefined`)."""
    jobs = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != len(ATTRIBUTES) + 1 or not re.fullmatch(r"\d+\.\d+", parts[0]):
            continue
        job_id, status, code, by_signal, signal, name, hold = (p.strip() for p in parts)
        jobs[job_id] = CondorJob(job_id, _int(status), _int(code), by_signal.lower() == "true",
                                 _int(signal), "" if name == "undefined" else name,
                                 "" if hold == "undefined" else hold)
    return jobs


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def map_job(job: CondorJob, cancelled_here: bool = False) -> JobStatus:
    native = STATUS_NAMES.get(job.status or 0, str(job.status))
    if job.status == 1:
        return JobStatus(JobState.QUEUED, native)
    if job.status in (2, 6, 7):
        return JobStatus(JobState.RUNNING, native)
    if job.status == 5:
        return JobStatus(JobState.FAILED, native, None, f"held: {job.hold_reason or '?'}")
    if job.status == 3:
        if cancelled_here:
            return JobStatus(JobState.CANCELLED, native, None, "cancelled on request")
        return JobStatus(JobState.FAILED, native, None, "removed by someone else (condor_rm)")
    if job.status != 4:
        return JobStatus(JobState.RUNNING, native)
    if job.by_signal:
        sig = job.signal or 0
        return JobStatus(JobState.FAILED, native, 128 + sig, f"killed by signal {sig}")
    if job.exit_code == 0:
        return JobStatus(JobState.COMPLETED, native, 0)
    return JobStatus(JobState.FAILED, native, job.exit_code, f"exit status {job.exit_code}")


class HTCondorScheduler(Scheduler):
    """Jobs of the endpoint's user at the schedd CONDOR_CONFIG names."""

    name = "htcondor"
    transient_errors = TRANSIENT_ERRORS
    directive_prefix = PREFIX.strip()

    def submit(self, script_path: str | os.PathLike, job_name: str,
               cwd: str | os.PathLike) -> str:
        script = Path(script_path)
        script.chmod(script.stat().st_mode | 0o111)  # HTCondor execs the script itself
        description = script.with_name(script.name + ".sub")
        description.write_text(submit_description(script.read_text(), str(script.resolve()),
                                                  job_name, str(Path(cwd).resolve())))
        return parse_terse(self.run(["condor_submit", "-terse", str(description)],
                                    cwd=cwd).stdout)

    def find_by_name(self, job_name: str, clusters: str | None = None) -> str | None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job_name):
            return None
        constraint = f'JobBatchName == "{job_name}"'
        for tool in ("condor_q", "condor_history"):
            jobs = self._af(tool, ["-constraint", constraint])
            if jobs:
                return max(jobs, key=lambda j: tuple(int(x) for x in j.split(".")))
        return None

    def status(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(str(j) for j in job_ids))
        result = {job_id: UNKNOWN for job_id in wanted}
        if not wanted:
            return result
        found = self._af("condor_q", wanted)
        missing = [j for j in wanted if j not in found]
        if missing:
            found.update(self._af("condor_history", ["-match", str(len(missing)), *missing]))
        for job_id, job in found.items():
            if job_id not in result:
                continue
            result[job_id] = map_job(job, self.was_cancelled_here(job_id))
            if job.status == 5:
                self.cancel(job_id)
                self._cancelled.discard(job_id)
        return result

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(str(job_id))
        proc = self.run(["condor_rm", str(job_id)], ok_codes=range(256))
        if proc.returncode != 0 and "not found" not in proc.stderr + proc.stdout:
            raise SchedulerError(f"condor_rm {job_id} failed: {proc.stderr.strip()}",
                                 ["condor_rm", job_id], proc.returncode, proc.stderr)

    def _af(self, tool: str, args: list[str]) -> dict[str, CondorJob]:
        return parse_af(self.run([tool, *args, "-af:jt", *ATTRIBUTES]).stdout)
