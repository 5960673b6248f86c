"""Slurm adapter: sbatch, squeue, scancel.

Status comes from `squeue --states=all`, which covers pending, running and recently finished
jobs (for MinJobAge seconds after the end) with their exit codes, in one command for many jobs.
It does not depend on `sacct`, which needs slurmdbd: jobs squeue no longer knows are UNKNOWN,
and the engine reads the job's exit-status file, and asks `history` (sacct, where accounting
works) for the final state of a job that left none, e.g. one whose node died.

Multi-cluster sites (`clusters` in the resource specification): `sbatch --parsable` prints
``<id>;<cluster>`` for a job on another cluster. That whole text is the job id the engine
journals, and every later command about the job names its cluster (`squeue -M`, `scancel -M`):
without it squeue looks on the local cluster only, and the job would be taken for lost.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from fnrelay_endpoint.engines.batch.schedulers.base import (
    UNKNOWN,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
    decode_wait_status,
)

#: squeue -O fields; `|` after each is the separator (and lifts the default width of 20).
#: JobArrayID with --array is `1234_5` for an array element (one line each, pending or not) and
#: the plain id for any other job, so array elements are watched like jobs.
SQUEUE_FORMAT = "JobArrayID:|,State:|,exit_code:|,Reason:|,Name:"
#: Ids per squeue call, to keep command lines short.
CHUNK = 200

QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "RESV_DEL_HOLD"}
#: States that wait for someone to release the job: without that it never starts.
HELD_STATES = {"REQUEUE_HOLD", "SPECIAL_EXIT"}
#: Pending reasons (squeue %r) no amount of waiting fixes: a hold, or a request the partition,
#: account or QOS can never satisfy (with EnforcePartLimits=NO, Slurm accepts such jobs).
#: Limits that free up as other jobs end (QOSMaxJobsPerUserLimit...) are not here.
NEVER_RUNS = {"JobHeldAdmin", "JobHeldUser", "PartitionTimeLimit", "PartitionNodeLimit",
              "InvalidAccount", "InvalidQOS", "BadConstraints", "DependencyNeverSatisfied",
              "AssocMaxWallDurationPerJobLimit", "QOSMaxWallDurationPerJobLimit",
              "AssocMaxNodesPerJobLimit", "QOSMaxNodePerJobLimit"}
#: sbatch errors that pass by themselves: slurmctld busy or restarting, slurmdbd unreachable,
#: the per-user or per-account limit on submitted jobs (MaxSubmitJobs) while the queue drains.
TRANSIENT_ERRORS = re.compile(
    r"timed out|slurm_persist_conn|unable to contact slurm controller"
    r"|temporarily unable to accept job|connection refused|zero bytes were transmitted"
    r"|MaxSubmitJob|QOSMaxSubmitJobPerUserLimit|AssocMaxSubmitJobLimit|job submit limit"
    r"|resource temporarily unavailable", re.IGNORECASE)
#: The reason a failing Prolog leaves (the job is requeued and held).
LAUNCH_FAILED = "launch failed requeued held"
RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
           "RESIZING"}
FAILED_REASONS = {
    "FAILED": "",
    "TIMEOUT": "walltime exceeded (TIMEOUT)",
    "OUT_OF_MEMORY": "out of memory (OUT_OF_MEMORY)",
    "DEADLINE": "deadline reached (DEADLINE)",
    "CANCELLED": "cancelled by the scheduler or an administrator (CANCELLED)",
}
INFRASTRUCTURE = {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "REVOKED"}
#: What `sbatch --parsable` prints: the job id, and the cluster when it is not the local one.
_PARSABLE = re.compile(r"^(\d+)(?:;([A-Za-z0-9_.-]+))?$")


def split_job_id(job_id: str) -> tuple[str, str | None]:
    """("1234", "c2") from the journaled id "1234;c2"; ("1234", None) for a local job."""
    number, _, cluster = str(job_id).partition(";")
    return number, cluster or None


def cluster_args(cluster: str | None) -> list[str]:
    """`-M cluster` for a job on another cluster, nothing for a local one."""
    return ["-M", cluster] if cluster else []


def parse_found_ids(text: str) -> list[str]:
    """Job ids in `squeue --format=%i` output; "id;cluster" below a `-M` "CLUSTER: c" line."""
    ids, cluster = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("CLUSTER:"):
            cluster = line.partition(":")[2].strip() or None
        elif line.isdigit():
            ids.append(f"{line};{cluster}" if cluster else line)
    return ids


def map_state(native: str, exit_raw: str = "", reason: str = "",
              cancelled_here: bool = False) -> JobStatus:
    """Engine status for Slurm's state name, raw exit code (wait status or 'code:signal')."""
    native = native.strip().upper().split(" ")[0].rstrip("+")
    reason = "" if reason.strip() in ("None", "(null)") else reason.strip()
    exit_code, signal_reason = _exit_code(exit_raw)
    if (native in HELD_STATES or _never_runs(reason)) and not cancelled_here:
        return JobStatus(JobState.HELD, native, None, reason or native)
    if native in QUEUED:
        return JobStatus(JobState.QUEUED, native, None, reason)
    if native in RUNNING:
        return JobStatus(JobState.RUNNING, native, None, reason)
    if native == "COMPLETED":
        return JobStatus(JobState.COMPLETED, native, exit_code if exit_code is not None else 0)
    if native == "CANCELLED" and cancelled_here:
        return JobStatus(JobState.CANCELLED, native, exit_code, "cancelled on request")
    if native in FAILED_REASONS:
        text = FAILED_REASONS[native] or _exit_reason(exit_code, signal_reason, reason)
        return JobStatus(JobState.FAILED, native, exit_code, text)
    if native in INFRASTRUCTURE:
        return JobStatus(JobState.INFRASTRUCTURE, native, exit_code,
                         f"{native}{': ' + reason if reason else ''}")
    # A state newer than this adapter: keep watching, the exit-status file settles it.
    return JobStatus(JobState.RUNNING, native, exit_code, reason)


def _never_runs(reason: str) -> bool:
    return reason in NEVER_RUNS or reason.lower().startswith(LAUNCH_FAILED)


def _exit_code(raw: str) -> tuple[int | None, str]:
    raw = raw.strip()
    if not raw or raw in ("N/A", "(null)"):
        return None, ""
    try:
        if ":" in raw:  # scontrol style "code:signal"
            code, sig = (int(x) for x in raw.split(":", 1))
            return (128 + sig, f"killed by signal {sig}") if sig else (code, "")
        return decode_wait_status(int(raw))
    except ValueError:
        return None, ""


def _exit_reason(exit_code: int | None, signal_reason: str, reason: str) -> str:
    if signal_reason:
        return signal_reason
    if exit_code is not None:
        return f"exit status {exit_code}"
    return reason or "failed"


#: sacct fields, in --parsable2 output (`|`-separated, no trailing `|`).
SACCT_FORMAT = "JobIDRaw,State,ExitCode"
#: sacct's answer on a cluster without slurmdbd: ask no more.
_NO_ACCOUNTING = re.compile(r"accounting storage is disabled|slurmdbd", re.IGNORECASE)


def parse_sacct(text: str) -> dict[str, tuple[str, str]]:
    """{job id: (state, exit code)} from `sacct --parsable2` output in SACCT_FORMAT; the last
    row of an id wins (a requeued job has one row per run)."""
    jobs = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[0].isdigit():
            jobs[parts[0]] = (parts[1], parts[2])
    return jobs


def parse_squeue(text: str) -> dict[str, tuple[str, str, str, str]]:
    """{job id: (state, exit code, reason, name)} from squeue output in SQUEUE_FORMAT."""
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|", 4)
        if len(parts) != 5 or not parts[0].strip():
            continue
        job_id, state, exit_raw, reason, name = (p.strip() for p in parts)
        jobs[job_id] = (state, exit_raw, reason, name)
    return jobs


class SlurmScheduler(Scheduler):
    """Jobs of the endpoint's user on the Slurm cluster SLURM_CONF (or the default) names."""

    name = "slurm"
    directive_prefix = "#SBATCH"
    #: Set when sacct said the cluster keeps no accounting: `history` asks no more.
    _no_accounting = False
    transient_errors = TRANSIENT_ERRORS
    supports_arrays = True
    array_index_variable = "SLURM_ARRAY_TASK_ID"
    array_output_name = "%A_%a.out"

    def submit(self, script_path: str | os.PathLike, job_name: str,
               cwd: str | os.PathLike) -> str:
        out = self.run(["sbatch", "--parsable", f"--job-name={job_name}", f"--chdir={cwd}",
                        str(script_path)], cwd=cwd).stdout.strip()
        job_id = out.splitlines()[-1].strip() if out else ""
        if not _PARSABLE.fullmatch(job_id):
            raise SchedulerError(f"sbatch printed no job id: {out!r}", ["sbatch"])
        return job_id

    def submit_array(self, script_path: str | os.PathLike, job_name: str,
                     cwd: str | os.PathLike, count: int, output: str) -> list[str]:
        # Command-line options override the script's #SBATCH lines (job name, output).
        out = self.run(["sbatch", "--parsable", f"--array=0-{count - 1}",
                        f"--job-name={job_name}", f"--chdir={cwd}", f"--output={output}",
                        f"--error={output}", str(script_path)], cwd=cwd).stdout.strip()
        job_id = out.splitlines()[-1].split(";")[0].strip() if out else ""
        if not job_id.isdigit():
            raise SchedulerError(f"sbatch printed no job id: {out!r}", ["sbatch"])
        return [f"{job_id}_{i}" for i in range(count)]

    def find_by_name(self, job_name: str, clusters: str | None = None) -> str | None:
        # Without the task's clusters squeue looks on the local cluster only, and a job sbatch
        # placed elsewhere before a crash would be submitted a second time.
        out = self.run(["squeue", *cluster_args(clusters), "--noheader", "--me",
                        "--states=all", f"--name={job_name}", "--format=%i"]).stdout
        ids = parse_found_ids(out)
        return max(ids, key=lambda i: int(split_job_id(i)[0])) if ids else None

    def status(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(str(j) for j in job_ids))
        result = {job_id: UNKNOWN for job_id in wanted}
        by_cluster: dict[str | None, dict[str, str]] = {}  # cluster -> {number: journaled id}
        for job_id in wanted:
            number, cluster = split_job_id(job_id)
            by_cluster.setdefault(cluster, {})[number] = job_id
        for cluster, ids in by_cluster.items():
            numbers = list(ids)
            for start in range(0, len(numbers), CHUNK):
                rows = self._squeue(numbers[start:start + CHUNK], cluster)
                for number, (state, exit_raw, reason, _name) in rows.items():
                    if number in ids:
                        job_id = ids[number]
                        result[job_id] = map_state(state, exit_raw, reason,
                                                   self.was_cancelled_here(job_id))
        return result

    def history(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        if self._no_accounting:
            return {}
        by_cluster: dict[str | None, dict[str, str]] = {}
        for job_id in dict.fromkeys(str(j) for j in job_ids):
            number, cluster = split_job_id(job_id)
            by_cluster.setdefault(cluster, {})[number] = job_id
        result: dict[str, JobStatus] = {}
        for cluster, ids in by_cluster.items():
            argv = ["sacct", *cluster_args(cluster), "--noheader", "--parsable2",
                    "--allocations", f"--jobs={','.join(ids)}", f"--format={SACCT_FORMAT}"]
            try:
                out = self.run(argv).stdout
            except SchedulerError as e:
                if _NO_ACCOUNTING.search(str(e)):
                    self._no_accounting = True
                return result
            for number, (state, exit_raw) in parse_sacct(out).items():
                if number in ids:
                    status = map_state(state, exit_raw, "",
                                       self.was_cancelled_here(ids[number]))
                    if status.terminal:
                        result[ids[number]] = status
        return result

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(str(job_id))
        number, cluster = split_job_id(job_id)
        self.run(["scancel", *cluster_args(cluster), number])

    def _squeue(self, job_ids: list[str], cluster: str | None = None
                ) -> dict[str, tuple[str, str, str, str]]:
        argv = ["squeue", *cluster_args(cluster), "--noheader", "--states=all", "--array",
                f"--jobs={','.join(job_ids)}", f"--Format={SQUEUE_FORMAT}"]
        proc = self.run(argv, ok_codes=(0, 1))
        if proc.returncode == 1:
            # All ids purged: "Invalid job id specified". Anything else (controller down) is
            # an error, so that the engine never takes an outage for finished jobs.
            if "invalid job id" not in proc.stderr.lower():
                raise SchedulerError(f"squeue failed: {proc.stderr.strip()}", argv, 1,
                                     proc.stderr)
            return {}
        return parse_squeue(proc.stdout)
