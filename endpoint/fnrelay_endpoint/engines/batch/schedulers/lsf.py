"""IBM Spectrum LSF (10.1) adapter: `bsub < script`, `bjobs -json -o`, bkill.

LSF reads `#BSUB` lines only from a script given on bsub's standard input (unless the site
sets LSB_BSUB_PARSE_SCRIPT), so the script goes in by stdin. bsub answers "Job <1234> is
submitted to queue <normal>."; `bjobs -a -json -o "<fields>" ids` reports pending, running and
recently finished jobs (for CLEAN_PERIOD, 1 h by default), and an unknown id as a record with
ERROR. Field names and states follow the IBM documentation of bjobs -o and bjobs job states
(LSF 10.1.0): PEND/WAIT/PROV waiting, PSUSP held (failed with its reason), RUN/USUSP/SSUSP/
UNKWN/ZOMBI running, DONE (exit 0), EXIT (non-zero, or killed: EXIT_REASON holds LSF's TERM_*
reason).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fnrelay_endpoint.engines.batch.schedulers.base import (
    UNKNOWN,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
)

BJOBS_FIELDS = "jobid stat exit_code exit_reason pend_reason job_name"
QUEUED = {"PEND", "WAIT", "PROV"}
#: Suspended while pending (bstop by the user or an admin): it never starts until bresume.
HELD = {"PSUSP"}
RUNNING = {"RUN", "USUSP", "SSUSP", "UNKWN", "ZOMBI"}
#: TERM_* reasons (bjobs -l "Exited with" / EXIT_REASON) that are the task's own limits.
LIMIT_REASONS = {"TERM_RUNLIMIT": "walltime exceeded", "TERM_MEMLIMIT": "memory exceeded",
                 "TERM_CPULIMIT": "cpu time exceeded", "TERM_SWAP": "swap limit exceeded"}
#: TERM_* reasons where another host or a later attempt may succeed.
INFRASTRUCTURE_REASONS = ("TERM_PREEMPT", "TERM_REQUEUE_ADMIN", "TERM_REQUEUE_OWNER",
                          "TERM_ZOMBIE", "TERM_LOAD", "TERM_UNKNOWN")
#: bsub refusals that pass by themselves (IBM Spectrum LSF 10.1.0: lsb.params MAX_PEND_JOBS,
#: MAX_PEND_SLOTS and SUB_TRY_INTERVAL; bsub's LSB_NTRIES; the LIM/mbatchd error strings of
#: ls_sysmsg/lsb_sysmsg): mbatchd or LIM down or busy, and the user's or group's pending-job
#: thresholds while the queue drains.
TRANSIENT_ERRORS = re.compile(
    r"not responding|LSF is down|LIM is down|master LIM|try later|contacting mbatchd"
    r"|connection refused|timed out|pending job (slot )?threshold reached"
    r"|job limit reached", re.IGNORECASE)
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")


def parse_bsub(text: str) -> str:
    """The job id of bsub's "Job <1234> is submitted to queue <normal>." line."""
    m = _SUBMITTED.search(text)
    if m is None:
        raise SchedulerError(f"bsub printed no job id: {text.strip()!r}", ["bsub"])
    return m.group(1)


def parse_bjobs_json(text: str) -> dict[str, dict[str, Any]]:
    """{job id: record} of `bjobs -json -o ...`; records with ERROR (unknown ids) left out."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchedulerError(f"bjobs -json printed no JSON ({e}): {text[:200]!r}") from None
    return {str(r["JOBID"]): r for r in data.get("RECORDS", [])
            if isinstance(r, dict) and "JOBID" in r and "ERROR" not in r}


def map_record(record: dict[str, Any], cancelled_here: bool = False) -> JobStatus:
    """Engine status of one bjobs record."""
    native = str(record.get("STAT", "")).strip()
    reason = str(record.get("EXIT_REASON") or "").strip()
    if native in HELD and not cancelled_here:
        why = str(record.get("PEND_REASON") or "").strip() or "suspended while pending"
        return JobStatus(JobState.HELD, native, None, why)
    if native in QUEUED or native in HELD:
        return JobStatus(JobState.QUEUED, native, None, str(record.get("PEND_REASON") or ""))
    if native in RUNNING:
        return JobStatus(JobState.RUNNING, native)
    code = _int(record.get("EXIT_CODE"))
    if native == "DONE":
        return JobStatus(JobState.COMPLETED, native, 0)
    if native != "EXIT":
        return JobStatus(JobState.RUNNING, native)  # a state newer than this adapter
    if cancelled_here:
        return JobStatus(JobState.CANCELLED, native, code, "cancelled on request")
    term = reason.split(":", 1)[0].strip()
    if term in LIMIT_REASONS:
        return JobStatus(JobState.FAILED, native, code, f"{LIMIT_REASONS[term]} ({reason})")
    if term in INFRASTRUCTURE_REASONS:
        return JobStatus(JobState.INFRASTRUCTURE, native, code, reason)
    text = f"exit status {code}" if code is not None else "exited"
    return JobStatus(JobState.FAILED, native, code, f"{text}: {reason}" if reason else text)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


class LSFScheduler(Scheduler):
    """Jobs of the endpoint's user on the LSF cluster the environment (LSF_ENVDIR) names."""

    name = "lsf"
    directive_prefix = "#BSUB"
    transient_errors = TRANSIENT_ERRORS

    def submit(self, script_path: str | os.PathLike, job_name: str,
               cwd: str | os.PathLike) -> str:
        argv = ["bsub", "-J", job_name]
        # Without LSB_NTRIES, bsub retries a pending-job threshold by itself, forever: one try
        # hands the wait to the engine's back-off (a site's own LSB_NTRIES wins).
        env = {"LSB_NTRIES": "1", **(self.env if self.env is not None else os.environ)}
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=self.timeout, input=Path(script_path).read_text())
        except FileNotFoundError as exc:
            raise SchedulerError("bsub not found: is lsf installed and on PATH?", argv) from exc
        except subprocess.TimeoutExpired as exc:
            raise SchedulerError(f"bsub did not answer within {self.timeout:g}s", argv,
                                 transient=True) from exc
        if proc.returncode != 0:
            raise SchedulerError(f"bsub failed (exit {proc.returncode}): "
                                 f"{proc.stderr.strip() or proc.stdout.strip()}", argv,
                                 proc.returncode, proc.stderr)
        return parse_bsub(proc.stdout)

    def find_by_name(self, job_name: str, clusters: str | None = None) -> str | None:
        proc = self.run(["bjobs", "-a", "-u", getpass.getuser(), "-J", job_name, "-json",
                         "-o", "jobid"], ok_codes=range(256))
        ids = list(parse_bjobs_json(proc.stdout)) if proc.returncode == 0 else []
        return max(ids, key=int) if ids else None

    def status(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(str(j) for j in job_ids))
        result = {job_id: UNKNOWN for job_id in wanted}
        if not wanted:
            return result
        argv = ["bjobs", "-a", "-json", "-o", BJOBS_FIELDS, *wanted]
        proc = self.run(argv, ok_codes=range(256))  # exit 255 when some id is unknown
        records = parse_bjobs_json(proc.stdout)
        if proc.returncode != 0 and not proc.stdout.strip():
            raise SchedulerError(f"bjobs failed (exit {proc.returncode}): "
                                 f"{proc.stderr.strip() or 'no output'}", argv,
                                 proc.returncode, proc.stderr)
        for job_id, record in records.items():
            if job_id in result:
                result[job_id] = map_record(record, self.was_cancelled_here(job_id))
        return result

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(str(job_id))
        proc = self.run(["bkill", str(job_id)], ok_codes=range(256))
        if proc.returncode != 0 and not re.search(r"already finished|No matching job",
                                                  proc.stderr + proc.stdout, re.IGNORECASE):
            raise SchedulerError(f"bkill {job_id} failed: {proc.stderr.strip()}",
                                 ["bkill", job_id], proc.returncode, proc.stderr)
