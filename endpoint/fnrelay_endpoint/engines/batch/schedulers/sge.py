"""Son of Grid Engine (8.1.x) adapter: `qsub -terse`, `qstat -xml`, `qacct -j`, qdel.

`qstat` lists only pending and running jobs: one `qstat -xml -u <user>` answers for all of
them. A job it no longer lists has finished, and `qacct -j <id>` reads its record from the
accounting file: `failed` (sge_status(5): 0 ran normally, 26 could not open its output file,
37 a limit enforced by qmaster, 100 killed by a signal, ...) and `exit_status`. qmaster writes
that file every `accounting_flush_time` (15 s by default), so a job can be in neither for a
while: UNKNOWN, and the engine reads the job's exit-status file.

State letters are sge_status(5)'s: `qw`/`hqw` pending (`h` held), `r`/`t` running or being
transferred, `s`/`S`/`T` suspended, `d` being deleted, `E` error (e.g. `Eqw`: the job cannot
start until an administrator clears it with `qmod -cj`).

An `hqw` job is either held (qhold: a user, operator or system hold, which only qrls lifts) or
waits for other jobs (`-hold_jid`, array holds), which ends by itself. SGE 8.1.9's `qstat -j`
says only "Job is in hold state", not which hold: the kinds come from `qstat -s hu|ho|hs`
(qstat(1)), asked only while some watched job is `hqw`. A job with a user, operator or system
hold is HELD: the engine deletes it and fails the task with the hold's name, as for Slurm's
JobHeldUser/JobHeldAdmin.
"""

from __future__ import annotations

import getpass
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from fnrelay_endpoint.engines.batch.schedulers.base import (
    UNKNOWN,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
)

#: qacct `failed` codes of the task's own making (sge_status(5)): not retried elsewhere.
USER_FAILURES = {26: "could not open its output file", 27: "the requested shell was not found",
                 28: "could not change to its working directory",
                 37: "a limit (h_rt, h_cpu or h_vmem) was enforced by qmaster"}
#: The job ran and then died: its exit_status tells how (128+N is signal N).
AFTER_JOB = 100
#: qsub refusals that pass by themselves: sge_qmaster unreachable or restarting, and the
#: max_u_jobs / max_jobs limits (messages 33207/33208 of Grid Engine's catalogue) while the
#: queue drains.
TRANSIENT_ERRORS = re.compile(
    r"timed out|connection refused|temporarily unavailable|unable to contact qmaster"
    r"|jobs are allowed per user|jobs are allowed per cluster", re.IGNORECASE)


#: `qstat -s` selectors of the holds only a person releases (qrls), and their names.
HOLDS = {"hu": "user hold (qhold -h u)", "ho": "operator hold (qhold -h o)",
         "hs": "system hold (qhold -h s)"}


@dataclass(frozen=True)
class QstatJob:
    """One job of `qstat -xml`."""

    job_id: str
    name: str
    state: str


def parse_qstat_xml(text: str) -> list[QstatJob]:
    """Jobs of `qstat -xml` (running under queue_info, pending under job_info)."""
    if not text.strip():
        return []
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise SchedulerError(f"qstat -xml printed no XML ({e}): {text[:200]!r}") from None
    return [QstatJob(job.findtext("JB_job_number", "").strip(),
                     job.findtext("JB_name", "").strip(), job.findtext("state", "").strip())
            for job in root.iter("job_list")]


def parse_qacct(text: str) -> dict[str, dict[str, str]]:
    """{job number: record} from `qacct -j` (records separated by '=====' lines)."""
    records: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in [*text.splitlines(), "="]:
        if line.startswith("="):
            if "jobnumber" in current:
                records[current["jobnumber"]] = current  # the last attempt of an id wins
            current = {}
            continue
        key, _, value = line.partition(" ")
        if key:
            current[key] = value.strip()
    return records


def map_state(state: str, reason: str = "", holds: Iterable[str] = ()) -> JobStatus:
    """Engine status of a job qstat still lists; `reason` is qstat -j's error reason,
    `holds` the job's `qstat -s` hold selectors (HOLDS)."""
    if "E" in state:
        return JobStatus(JobState.FAILED, state, None,
                         f"the job is in Grid Engine's error state: {reason or 'no reason'}")
    if "q" in state:  # qw, hqw, hRwq, Rq: pending
        named = [HOLDS[h] for h in HOLDS if h in holds]
        if "h" in state and named:
            return JobStatus(JobState.HELD, state, None,
                             f"held by Grid Engine: {' and '.join(named)}; only qrls releases "
                             "it")
        return JobStatus(JobState.QUEUED, state, None, "held" if "h" in state else "")
    return JobStatus(JobState.RUNNING, state)  # r, t, Rr, s, S, T, and d (being deleted)


def map_accounting(record: dict[str, str], cancelled_here: bool = False) -> JobStatus:
    """Engine status of a finished job from its qacct record."""
    failed_text = record.get("failed", "0")
    failed = _leading_int(failed_text) or 0
    exit_code = _leading_int(record.get("exit_status", ""))
    native = f"failed={failed}" if failed else "done"
    if cancelled_here:
        return JobStatus(JobState.CANCELLED, native, exit_code, "cancelled on request")
    if failed == 0:
        if exit_code == 0:
            return JobStatus(JobState.COMPLETED, native, 0)
        return JobStatus(JobState.FAILED, native, exit_code, _exit_reason(exit_code))
    if failed in USER_FAILURES:
        return JobStatus(JobState.FAILED, native, exit_code, USER_FAILURES[failed])
    if failed == AFTER_JOB:
        return JobStatus(JobState.FAILED, native, exit_code,
                         f"ran, then {_exit_reason(exit_code)} ({failed_text})")
    # Failures before the job ran (execd, prolog, PE start, shepherd): another host may work.
    return JobStatus(JobState.INFRASTRUCTURE, native, exit_code,
                     f"Grid Engine could not run the job ({failed_text})")


def _leading_int(text: str) -> int | None:
    m = re.match(r"\s*(-?\d+)", text)
    return int(m.group(1)) if m else None


def _exit_reason(code: int | None) -> str:
    if code is not None and code > 128:
        return f"killed by signal {code - 128}"
    return f"exit status {code}"


class SGEScheduler(Scheduler):
    """Jobs of the endpoint's user on the Grid Engine cell SGE_ROOT/SGE_CELL names."""

    name = "sge"
    directive_prefix = "#$"
    transient_errors = TRANSIENT_ERRORS

    def submit(self, script_path: str | os.PathLike, job_name: str,
               cwd: str | os.PathLike) -> str:
        # -terse prints the job id alone; -cwd is not needed, the script cds to its sandbox.
        out = self.run(["qsub", "-terse", "-N", job_name, str(script_path)],
                       cwd=cwd).stdout.strip()
        job_id = out.splitlines()[-1].strip() if out else ""
        if not re.fullmatch(r"\d+", job_id):
            raise SchedulerError(f"qsub printed no job id: {out!r}", ["qsub"])
        return job_id

    def find_by_name(self, job_name: str, clusters: str | None = None) -> str | None:
        ids = [j.job_id for j in self._qstat() if j.name == job_name]
        if not ids:
            ids = list(self._qacct(["-j", job_name]))
        return max(ids, key=int) if ids else None

    def status(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(str(j) for j in job_ids))
        result = {job_id: UNKNOWN for job_id in wanted}
        if not wanted:
            return result
        listed = {j.job_id: j for j in self._qstat()}
        held = any("h" in listed[j].state for j in wanted if j in listed)
        holds = self._holds() if held else {}
        for job_id in wanted:
            if job_id in listed:
                result[job_id] = self._listed(job_id, listed[job_id].state,
                                              holds.get(job_id, ()))
                continue
            record = self._qacct(["-j", job_id]).get(job_id)
            if record is not None:
                result[job_id] = map_accounting(record, self.was_cancelled_here(job_id))
            elif self.was_cancelled_here(job_id):
                # qdel of a job that never started leaves no accounting record.
                result[job_id] = JobStatus(JobState.CANCELLED, "deleted", None,
                                           "cancelled on request")
        return result

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(str(job_id))
        proc = self.run(["qdel", str(job_id)], ok_codes=range(256))
        if proc.returncode != 0 and "does not exist" not in proc.stderr + proc.stdout:
            raise SchedulerError(f"qdel {job_id} failed: {proc.stderr.strip()}",
                                 ["qdel", job_id], proc.returncode, proc.stderr)

    def _listed(self, job_id: str, state: str, holds: Iterable[str] = ()) -> JobStatus:
        """A job in error state is deleted as it is failed: one an administrator clears
        later (qmod -cj) would otherwise run a task already reported failed."""
        if self.was_cancelled_here(job_id):
            return JobStatus(JobState.RUNNING, state)  # qdel under way: qacct settles it
        if "E" not in state:
            return map_state(state, holds=holds)
        reason = self._error_reason(job_id)
        self.cancel(job_id)
        self._cancelled.discard(job_id)
        return map_state(state, reason)

    def _error_reason(self, job_id: str) -> str:
        out = self.run(["qstat", "-j", job_id], ok_codes=(0, 1)).stdout
        m = re.search(r"^error reason\s+\d+:\s*(.*)$", out, re.MULTILINE)
        return m.group(1).strip() if m else ""

    def _qstat(self, *selectors: str) -> list[QstatJob]:
        return parse_qstat_xml(self.run(["qstat", "-xml", "-u", getpass.getuser(),
                                         *selectors]).stdout)

    def _holds(self) -> dict[str, list[str]]:
        """{job id: its HOLDS selectors} of this user's held jobs: one qstat per kind."""
        holds: dict[str, list[str]] = {}
        for selector in HOLDS:
            for job in self._qstat("-s", selector):
                holds.setdefault(job.job_id, []).append(selector)
        return holds

    def _qacct(self, args: list[str]) -> dict[str, dict[str, str]]:
        """qacct's records; {} when it knows none (it exits 1 for that, and when the
        accounting file does not exist yet)."""
        proc = self.run(["qacct", *args], ok_codes=(0, 1))
        return parse_qacct(proc.stdout) if proc.returncode == 0 else {}
