"""PBSPro adapter: parsing of documented and known-broken qstat output, and the command lines.

PBSPro cannot be installed here, so the command-line tests put small stand-ins for qsub,
qstat, qselect and qdel on PATH that log their argv and print the fixture files in data/.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from pathlib import Path

import pytest

from fnrelay_endpoint.engines.batch.schedulers.base import JobState, SchedulerError
from fnrelay_endpoint.engines.batch.schedulers.pbspro import (
    PBSProScheduler,
    map_job,
    parse_qstat_json,
)

DATA = Path(__file__).parent / "data"
S = JobState


def load(name: str) -> str:
    return (DATA / name).read_text()


def test_documented_qstat_json_maps_every_job_state():
    jobs = parse_qstat_json(load("qstat_multi.json"))
    got = {job_id.split(".")[0]: (map_job(a).state, map_job(a).exit_code)
           for job_id, a in jobs.items()}
    assert got == {
        "1001": (S.QUEUED, None),
        "1002": (S.RUNNING, None),
        "1003": (S.COMPLETED, 0),
        "1004": (S.FAILED, 3),
        "1005": (S.HELD, None),  # H: held, never starts by itself
        "1006": (S.FAILED, -29),  # walltime exceeded
        "1007": (S.FAILED, 143),  # 256 + SIGTERM
        "1008": (S.FAILED, None),  # deleted before it ran
        "1009": (S.RUNNING, None),  # E: exiting
        "1010": (S.INFRASTRUCTURE, -20),  # mother superior lost
        "1011": (S.QUEUED, None),  # W: waiting
        "1012": (S.RUNNING, None),  # S: suspended
        "1013[1]": (S.COMPLETED, 0),  # X: finished array subjob
    }


def test_reasons_name_the_cause_and_keep_pbs_comment():
    jobs = parse_qstat_json(load("qstat_multi.json"))
    assert "Insufficient amount of resource" in map_job(jobs["1001.pbs01"]).reason
    assert map_job(jobs["1006.pbs01"]).reason.startswith("walltime exceeded (TIMEOUT)")
    assert "killed by signal 15" in map_job(jobs["1007.pbs01"]).reason
    assert "deleted" in map_job(jobs["1008.pbs01"]).reason
    assert map_job(jobs["1004.pbs01"]).reason.startswith("exit status 3")
    assert map_job(jobs["1005.pbs01"]).reason == "job held, too many failed attempts to run"


def test_cancelled_through_the_adapter_is_cancelled():
    jobs = parse_qstat_json(load("qstat_multi.json"))
    assert map_job(jobs["1007.pbs01"], cancelled_here=True).state is S.CANCELLED


def test_invalid_escapes_are_repaired():
    text = load("qstat_invalid_escapes.json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    jobs = parse_qstat_json(text)
    assert set(jobs) == {"2001.pbs01", "2002.pbs01"}
    assert "MODULEPATH=/opt/a\\,/opt/b" in jobs["2001.pbs01"]["Variable_List"]
    assert map_job(jobs["2001.pbs01"]).state is S.COMPLETED
    assert map_job(jobs["2002.pbs01"]).state is S.RUNNING


def test_unrepairable_output_is_scraped_for_the_states():
    text = load("qstat_multi.json").replace('"queue":"workq",', '"queue":workq",', 1)
    jobs = parse_qstat_json(text)
    assert map_job(jobs["1004.pbs01"]).exit_code == 3
    assert map_job(jobs["1001.pbs01"]).state is S.QUEUED


def test_empty_output_means_no_jobs():
    assert parse_qstat_json("") == {}


# --- command lines, through stand-in executables -------------------------------------------
STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> {log}
case "$(basename "$0") $*" in
  "qsub "*) cat {data}/qsub_output.txt ;;
  "qselect -x -N fnrelay-found "*) cat {data}/qselect_output.txt ;;
  "qselect "*) ;;
  "qstat -f -x -F json 3001.pbs01 3002.pbs01 9999.pbs01") cat {data}/qstat_first_only.json ;;
  "qstat -f -x -F json 3002.pbs01") cat {data}/qstat_3002.json ;;
  "qstat -f -x -F json 9999.pbs01") echo "qstat: Unknown Job Id 9999.pbs01" >&2; exit 153 ;;
  "qstat -f -x -F json 1.down") echo "qstat: cannot connect to server pbs01 (errno=111)" >&2
     exit 1 ;;
  "qdel 1003.pbs01") echo "qdel: Job has finished 1003.pbs01" >&2; exit 35 ;;
  "qdel 1.down") echo "qdel: cannot connect to server pbs01" >&2; exit 1 ;;
  "qdel "*) ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def pbs(tmp_path: Path) -> tuple[PBSProScheduler, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    body = STUB.format(log=shlex.quote(str(log)), data=shlex.quote(str(DATA)))
    for tool in ("qsub", "qstat", "qselect", "qdel"):
        path = bin_dir / tool
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return PBSProScheduler(timeout=10, env=env), log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_submit_names_the_job_and_returns_its_id(pbs, tmp_path):
    sched, log = pbs
    assert sched.submit(tmp_path / "job.pbs", "fnrelay-t1", tmp_path) == "1001.pbs01"
    assert calls(log) == [f"qsub -N fnrelay-t1 {tmp_path / 'job.pbs'}"]


def test_find_by_name_includes_finished_jobs(pbs):
    sched, log = pbs
    assert sched.find_by_name("fnrelay-found") == "1017.pbs01"
    assert sched.find_by_name("fnrelay-none") is None
    assert calls(log)[0].startswith("qselect -x -N fnrelay-found -u ")


def test_status_asks_again_for_ids_qstat_left_out(pbs):
    sched, log = pbs
    got = sched.status(["3001.pbs01", "3002.pbs01", "9999.pbs01"])
    assert {k: v.state for k, v in got.items()} == {
        "3001.pbs01": S.RUNNING, "3002.pbs01": S.FAILED, "9999.pbs01": S.UNKNOWN}
    assert got["3002.pbs01"].exit_code == 1
    assert calls(log) == ["qstat -f -x -F json 3001.pbs01 3002.pbs01 9999.pbs01",
                          "qstat -f -x -F json 3002.pbs01", "qstat -f -x -F json 9999.pbs01"]


def test_unreachable_server_is_an_error_not_unknown(pbs):
    sched, _ = pbs
    with pytest.raises(SchedulerError, match="cannot connect"):
        sched.status(["1.down"])


def test_cancel_tolerates_finished_jobs_but_not_outages(pbs):
    sched, log = pbs
    sched.cancel("1002.pbs01")
    sched.cancel("1003.pbs01")
    assert calls(log) == ["qdel 1002.pbs01", "qdel 1003.pbs01"]
    assert sched.was_cancelled_here("1002.pbs01")
    with pytest.raises(SchedulerError, match="cannot connect"):
        sched.cancel("1.down")
