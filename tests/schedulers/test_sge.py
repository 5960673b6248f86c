"""The Son of Grid Engine adapter: parsing of real SGE 8.1.9 output, and the real cell.

data/sge/ holds output captured from Debian's gridengine 8.1.9 on this machine's test cell:
`qstat -xml` with a running, a held (`hqw`) and an error-state (`Eqw`: unwritable output
path) job, and `qacct -j` of a job that exited 3, one deleted while running (failed 100,
exit 137) and the Eqw one after qdel (failed 26). The formats are sge_status(5) and
accounting(5) of SGE 8.1.9. qstat-holds.xml lists five pending jobs: 10 with a user hold, 11
an operator hold, 12 a system and a user hold (qhold -h u|o|s), 13 waiting for 10
(-hold_jid), 14 deferred (-a); qstat-hold-hu/ho/hs.xml are `qstat -xml -s hu|ho|hs` then.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fnrelay_endpoint.engines.batch.schedulers.base import JobState, make_scheduler
from fnrelay_endpoint.engines.batch.schedulers.sge import (
    HOLDS,
    SGEScheduler,
    map_accounting,
    map_state,
    parse_qacct,
    parse_qstat_xml,
)
from support.sge_fixtures import sge_cell  # noqa: F401

DATA = Path(__file__).parent / "data" / "sge"
WAIT = 60.0  # upper bound for the idle cell to act, not a timing assertion


def test_qstat_xml_lists_running_and_pending_jobs():
    jobs = {j.job_id: (j.name, j.state)
            for j in parse_qstat_xml((DATA / "qstat-eqw.xml").read_text())}
    assert jobs == {"2": ("sleepy", "r"), "4": ("broken", "Eqw"), "3": ("held", "hqw")}


@pytest.mark.parametrize("state, expected", [
    ("qw", JobState.QUEUED), ("hqw", JobState.QUEUED), ("Rq", JobState.QUEUED),
    ("r", JobState.RUNNING), ("t", JobState.RUNNING), ("dr", JobState.RUNNING),
    ("s", JobState.RUNNING), ("Eqw", JobState.FAILED),
])
def test_state_letters_map_as_sge_status_5_says(state, expected):
    assert map_state(state).state is expected


def test_held_jobs_name_their_hold_and_dependencies_keep_waiting():
    holds: dict[str, list[str]] = {}
    for selector in HOLDS:
        for job in parse_qstat_xml((DATA / f"qstat-hold-{selector}.xml").read_text()):
            holds.setdefault(job.job_id, []).append(selector)
    assert holds == {"10": ["hu"], "11": ["ho"], "12": ["hu", "hs"]}
    jobs = parse_qstat_xml((DATA / "qstat-holds.xml").read_text())
    got = {j.job_id: map_state(j.state, holds=holds.get(j.job_id, ())) for j in jobs}
    assert {i: (s.native_state, s.state) for i, s in got.items()} == {
        "10": ("hqw", JobState.HELD), "11": ("hqw", JobState.HELD),
        "12": ("hqw", JobState.HELD), "13": ("hqw", JobState.QUEUED),
        "14": ("qw", JobState.QUEUED)}
    assert "user hold (qhold -h u)" in got["10"].reason
    assert "operator hold (qhold -h o)" in got["11"].reason
    assert "user hold (qhold -h u) and system hold (qhold -h s)" in got["12"].reason


def test_qacct_records_give_exit_codes_and_failure_reasons():
    records = parse_qacct((DATA / "qacct-three-jobs.txt").read_text())
    assert set(records) == {"1", "2", "4"}
    exited = map_accounting(records["1"])
    assert (exited.state, exited.exit_code, exited.reason) == (JobState.FAILED, 3,
                                                               "exit status 3")
    killed = map_accounting(records["2"])
    assert (killed.state, killed.exit_code) == (JobState.FAILED, 137)
    assert "killed by signal 9" in killed.reason
    no_output = map_accounting(records["4"])
    assert no_output.state is JobState.FAILED
    assert "output file" in no_output.reason
    assert map_accounting(records["2"], cancelled_here=True).state is JobState.CANCELLED
    assert map_accounting({"failed": "1  : assumedly before job", "exit_status": "0"}
                          ).state is JobState.INFRASTRUCTURE
    assert map_accounting({"failed": "0", "exit_status": "0"}).state is JobState.COMPLETED


# --- the real cell ------------------------------------------------------------------------------
def _script(tmp_path: Path, body: str, name: str = "job.sh") -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/bash\n#$ -S /bin/bash\n#$ -o {tmp_path}/out\n#$ -e {tmp_path}/err\n"
                    f"{body}\n")
    return path


def _final(scheduler: SGEScheduler, job_id: str):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        status = scheduler.status([job_id])[job_id]
        if status.terminal:
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.slow
def test_real_jobs_finish_with_their_exit_codes(sge_cell, tmp_path):  # noqa: F811
    scheduler = make_scheduler("sge")
    ok = scheduler.submit(_script(tmp_path, "echo hi from $JOB_ID", "ok.sh"), "fn-ok", tmp_path)
    bad = scheduler.submit(_script(tmp_path, "exit 3", "bad.sh"), "fn-bad", tmp_path)
    assert ok.isdigit() and bad.isdigit()
    assert scheduler.find_by_name("fn-ok") == ok
    assert _final(scheduler, ok).state is JobState.COMPLETED
    assert (tmp_path / "out").read_text().strip().startswith("hi from")
    failed = _final(scheduler, bad)
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    assert scheduler.find_by_name("fn-bad") == bad  # from qacct, once qstat forgot it


@pytest.mark.slow
def test_real_cancel_and_error_state(sge_cell, tmp_path):  # noqa: F811
    scheduler = make_scheduler("sge")
    sleeper = scheduler.submit(_script(tmp_path, "sleep 300", "s.sh"), "fn-sleep", tmp_path)
    scheduler.cancel(sleeper)
    assert _final(scheduler, sleeper).state is JobState.CANCELLED
    scheduler.cancel(sleeper)  # a finished job: not an error
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/bin/bash\n#$ -o /nonexistent/fnrelay/out\ntrue\n")
    job = scheduler.submit(broken, "fn-broken", tmp_path)
    status = _final(scheduler, job)
    assert status.state is JobState.FAILED and status.native_state == "Eqw"
    assert "can't open output file" in status.reason
    # deleted with its failure, so an administrator's qmod -cj cannot run it later
    deadline = time.monotonic() + WAIT
    while scheduler.find_by_name("fn-broken") in {job} and \
            job in [j.job_id for j in scheduler._qstat()] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job not in [j.job_id for j in scheduler._qstat()]
