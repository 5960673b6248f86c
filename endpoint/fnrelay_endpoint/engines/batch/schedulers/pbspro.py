"""PBS Professional / OpenPBS adapter: qsub, qselect, `qstat -fx -F json`, qdel.

qstat's JSON is parsed tolerantly because real servers print broken JSON: backslashes that are
not JSON escapes (`\\,` inside Variable_List), raw control characters, and some versions answer
only the first of several job ids (missing ids are then asked for one by one). `-x` includes
finished jobs from the server's job history, so a finished job keeps its Exit_status.

Exit_status: 0..255 is the job script's exit code, 256+N means killed by signal N, negative
values are PBS's JOB_EXEC_* codes (e.g. -29 walltime exceeded, -27 memory exceeded).

Job arrays (PBS Professional User's Guide 2022.1, "Job Arrays"): `qsub -J 0-N` prints the
array's id `1234[].server`; subjob (element) `i` is `1234[i].server` and reads its index from
PBS_ARRAY_INDEX. `qstat -t` lists an array's subjobs with the array, so the elements of one
array cost one qstat. The array itself is Q, then B (begun) while subjobs run, then F; a
finished or deleted subjob is X. `qdel 1234[i]` deletes one subjob. PBS refuses an array that
is not rerunnable ("cannot submit non-rerunable Array Job"), so arrays are submitted with
`-r y` whatever the task asked: PBS may then rerun an element after a node failure under its
own id, which the engine sees as queued again.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Iterable
from typing import Any

from fnrelay_endpoint.engines.batch.schedulers.base import (
    UNKNOWN,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
)

QUEUED = {"Q", "W", "T"}
#: Held (qhold, or a hook or failed start put a hold on it): never starts by itself.
HELD = {"H"}
RUNNING = {"R", "E", "B", "S", "U"}
FINISHED = {"F", "X"}
#: PBS substate of a finished job that was deleted (qdel) rather than run to its end.
SUBSTATE_TERMINATED = 91

#: JOB_EXEC_* codes that are the task's own doing (resource limits): failed, not retried.
LIMIT_CODES = {
    -29: "walltime exceeded (TIMEOUT)",
    -27: "memory exceeded (OUT_OF_MEMORY)",
    -26: "virtual memory exceeded (OUT_OF_MEMORY)",
    -28: "cpu time exceeded",
    -24: "ncpus exceeded (burst)",
    -25: "ncpus exceeded (sum)",
}
#: JOB_EXEC_* codes a retry elsewhere cannot fix (bad uid, password, hook rejection, Kerberos).
PERMANENT_CODES = {-10, -13, -17, -19, -23}

#: qsub errors that pass by themselves: queue or server job limits, a busy or restarting server.
TRANSIENT_ERRORS = re.compile(
    r"would exceed|maximum number of jobs already in queue|cannot connect to server"
    r"|connection refused|timed out|server (is )?busy|try again", re.IGNORECASE)

_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt]|.|$)', re.DOTALL)
#: A subjob id: '1234[5].server' -> ('1234', '5', '.server').
_SUBJOB = re.compile(r"^(\d+)\[(\d+)\](.*)$")
_UNKNOWN_JOB = re.compile(r"unknown job id:?\s*(\S+)", re.IGNORECASE)


# --- parsing --------------------------------------------------------------------------------
def repair_json(text: str) -> str:
    """Double every backslash that does not start a valid JSON escape."""
    def fix(m: re.Match) -> str:
        seq = m.group(1)
        return m.group(0) if len(seq) > 1 or (seq and seq in '"\\/bfnrt') else "\\\\" + seq

    return _ESCAPE.sub(fix, text)


def parse_qstat_json(text: str) -> dict[str, dict[str, Any]]:
    """{job id: attributes} from `qstat -f -F json` output, however broken; {} if none."""
    text = text.strip()
    if not text:
        return {}
    for candidate in (text, repair_json(text)):
        try:
            data = json.loads(candidate, strict=False)  # strict=False: raw control chars
        except json.JSONDecodeError:
            continue
        jobs = data.get("Jobs") if isinstance(data, dict) else None
        return {str(k): v for k, v in (jobs or {}).items() if isinstance(v, dict)}
    return _scrape_jobs(text)


def _scrape_jobs(text: str) -> dict[str, dict[str, Any]]:
    """Last resort for output no repair makes JSON: the few attributes we need, by regex."""
    jobs: dict[str, dict[str, Any]] = {}
    heads = list(re.finditer(r'"(\d+(?:\[\d*\])?\.[^"\s]*)"\s*:\s*\{', text))
    for i, head in enumerate(heads):
        body = text[head.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        attrs: dict[str, Any] = {}
        for key, pattern, conv in (
            ("job_state", r'"job_state"\s*:\s*"(\w)"', str),
            ("Exit_status", r'"Exit_status"\s*:\s*(-?\d+)', int),
            ("substate", r'"substate"\s*:\s*(\d+)', int),
            ("Job_Name", r'"Job_Name"\s*:\s*"([^"]*)"', str),
            ("comment", r'"comment"\s*:\s*"((?:[^"\\]|\\.)*)"', str),
        ):
            m = re.search(pattern, body)
            if m:
                attrs[key] = conv(m.group(1))
        if "job_state" in attrs:
            jobs[head.group(1)] = attrs
    return jobs


def map_job(attrs: dict[str, Any], cancelled_here: bool = False) -> JobStatus:
    """Engine status of one job from its qstat attributes."""
    native = str(attrs.get("job_state", "")).strip().upper()
    comment = str(attrs.get("comment", "") or "").strip()
    if native in HELD:  # qdel'd here: wait for F, as for a queued job
        state = JobState.QUEUED if cancelled_here else JobState.HELD
        return JobStatus(state, native, None, comment or "job held")
    if native in QUEUED:
        return JobStatus(JobState.QUEUED, native, None, comment)
    if native in RUNNING:
        return JobStatus(JobState.RUNNING, native, None, comment)
    if native not in FINISHED:
        return JobStatus(JobState.UNKNOWN, native, None, comment)  # M (moved) or unheard of
    code = _int(attrs.get("Exit_status"))
    if cancelled_here:
        return JobStatus(JobState.CANCELLED, native, code, "cancelled on request")
    if code is None:
        why = ("deleted by the scheduler or an administrator"
               if _int(attrs.get("substate")) == SUBSTATE_TERMINATED else "ended without running")
        return JobStatus(JobState.FAILED, native, None, _join(why, comment))
    if code == 0:
        return JobStatus(JobState.COMPLETED, native, 0, comment)
    if 0 < code < 256:
        return JobStatus(JobState.FAILED, native, code, _join(f"exit status {code}", comment))
    if code >= 256:
        sig = code - 256
        return JobStatus(JobState.FAILED, native, 128 + sig,
                         _join(f"killed by signal {sig}", comment))
    if code in LIMIT_CODES:
        return JobStatus(JobState.FAILED, native, code, _join(LIMIT_CODES[code], comment))
    state = JobState.FAILED if code in PERMANENT_CODES else JobState.INFRASTRUCTURE
    return JobStatus(state, native, code, _join(f"PBS could not run the job ({code})", comment))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _join(reason: str, comment: str) -> str:
    return f"{reason}: {comment}" if comment else reason


def _job_number(job_id: str) -> int:
    """The number a job id starts with ('1234[].server' -> 1234)."""
    m = re.match(r"\d+", job_id)
    return int(m.group()) if m else -1


def array_of(job_id: str) -> str:
    """The array a subjob belongs to ('1234[5].server' -> '1234[].server'); else the id."""
    m = _SUBJOB.match(job_id)
    return f"{m.group(1)}[]{m.group(3)}" if m else job_id


def short_id(job_id: str) -> str:
    """'1234.server.domain' -> '1234', to match ids whose server suffix differs."""
    return job_id.split(".", 1)[0]


# --- adapter --------------------------------------------------------------------------------
class PBSProScheduler(Scheduler):
    """Jobs of the endpoint's user on the PBS server qsub talks to."""

    name = "pbspro"
    directive_prefix = "#PBS"
    transient_errors = TRANSIENT_ERRORS
    supports_arrays = True
    array_index_variable = "PBS_ARRAY_INDEX"
    #: qsub replaces ^array_index^ in -o/-e paths by each subjob's index.
    array_output_name = "^array_index^.out"

    def submit(self, script_path: str | os.PathLike, job_name: str,
               cwd: str | os.PathLike) -> str:
        # qsub has no working-directory flag: it records its own cwd as PBS_O_WORKDIR.
        out = self.run(["qsub", "-N", job_name, str(script_path)], cwd=cwd).stdout.strip()
        job_id = out.splitlines()[-1].strip() if out else ""
        if not re.fullmatch(r"\d+(\[\d*\])?(\.\S+)?", job_id):
            raise SchedulerError(f"qsub printed no job id: {out!r}", ["qsub"])
        return job_id

    def submit_array(self, script_path: str | os.PathLike, job_name: str,
                     cwd: str | os.PathLike, count: int, output: str) -> list[str]:
        # Command-line options override the script's #PBS lines (name, rerun flag, output).
        out = self.run(["qsub", "-J", f"0-{count - 1}", "-r", "y", "-N", job_name, "-j", "oe",
                        "-o", output, str(script_path)], cwd=cwd).stdout.strip()
        array_id = out.splitlines()[-1].strip() if out else ""
        m = re.fullmatch(r"(\d+)\[\](\.\S+)?", array_id)
        if not m:
            raise SchedulerError(f"qsub -J printed no job array id: {out!r}", ["qsub"])
        return [f"{m.group(1)}[{i}]{m.group(2) or ''}" for i in range(count)]

    def find_by_name(self, job_name: str, clusters: str | None = None) -> str | None:
        out = self.run(["qselect", "-x", "-N", job_name, "-u", getpass.getuser()]).stdout
        ids = [line.strip() for line in out.splitlines() if re.match(r"\d", line.strip())]
        return max(ids, key=_job_number) if ids else None

    def status(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        wanted = list(dict.fromkeys(str(j) for j in job_ids))
        result = {job_id: UNKNOWN for job_id in wanted}
        if not wanted:
            return result
        # Subjobs are asked for through their array (with -t): one id per array.
        found = self._qstat(list(dict.fromkeys(array_of(j) for j in wanted)))
        missing = [j for j in wanted if self._lookup(found, j) is None]
        if len(missing) < len(wanted) and missing:
            # Some qstat versions print only the first of several ids: ask for the rest singly.
            for query in dict.fromkeys(array_of(j) for j in missing):
                found.update(self._qstat([query]))
        for job_id in wanted:
            attrs = self._lookup(found, job_id)
            if attrs is not None:
                result[job_id] = map_job(attrs, self.was_cancelled_here(job_id))
        return result

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(str(job_id))
        proc = self.run(["qdel", str(job_id)], ok_codes=range(256))
        if proc.returncode != 0 and not re.search(
                r"unknown job id|has finished|invalid for state", proc.stderr, re.IGNORECASE):
            raise SchedulerError(f"qdel {job_id} failed: {proc.stderr.strip()}",
                                 ["qdel", job_id], proc.returncode, proc.stderr)

    def _qstat(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        argv = ["qstat", "-f", "-x", *(["-t"] if any("[" in j for j in job_ids) else []),
                "-F", "json", *job_ids]
        proc = self.run(argv, ok_codes=range(256))
        jobs = parse_qstat_json(proc.stdout)
        if proc.returncode != 0 and not jobs and not _UNKNOWN_JOB.search(proc.stderr):
            raise SchedulerError(f"qstat failed (exit {proc.returncode}): "
                                 f"{proc.stderr.strip() or 'no output'}", argv,
                                 proc.returncode, proc.stderr)
        return jobs

    @staticmethod
    def _lookup(found: dict[str, dict[str, Any]], job_id: str) -> dict[str, Any] | None:
        if job_id in found:
            return found[job_id]
        for key, attrs in found.items():
            if short_id(key) == short_id(job_id):
                return attrs
        return None
