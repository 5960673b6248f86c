"""Multi-cluster Slurm and sacct, both of which need slurmdbd, which does not run here: a job
sbatch placed on another cluster (`<id>;<cluster>`) is watched and cancelled there, and sacct
tells the final state of a job squeue forgot. sbatch, squeue, scancel and sacct are stand-ins
that record their arguments and print what Slurm 22.05 prints (`sbatch --parsable`:
"id;cluster"; `squeue -M`: a "CLUSTER: name" line before the rows; `sacct --parsable2`: one
row per run, "JobIDRaw|State|ExitCode"; without accounting: exit 1, "Slurm accounting storage
is disabled")."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fnrelay.wire import TaskMessage
from fnrelay_endpoint.engines.batch.engine import BatchEngine
from fnrelay_endpoint.engines.batch.sandbox import Sandbox
from fnrelay_endpoint.engines.batch.schedulers.base import JobState
from fnrelay_endpoint.engines.batch.schedulers.slurm import SlurmScheduler

STANDIN = """#!/bin/bash
echo "$(basename "$0") $*" >> "$FNRELAY_CALLS"
case "$(basename "$0") $*" in
  sbatch*) echo "1234;c2" ;;
  sacct*) if [ -n "$FNRELAY_NO_ACCOUNTING" ]; then
            echo "Slurm accounting storage is disabled" >&2; exit 1; fi
          printf '1234|NODE_FAIL|0:0\\n1234|FAILED|1:0\\n55|CANCELLED by 0|0:15\\n' ;;
  "squeue -M c2"*"--format=%i") printf 'CLUSTER: c2\\n1234\\n' ;;
  *"-M c2"*) printf 'CLUSTER: c2\\n1234|PENDING|0|Priority|fnrelay-a|\\n' ;;
  squeue*) printf '77|RUNNING|0|None|fnrelay-b|\\n' ;;
esac
"""


@pytest.fixture
def sched(tmp_path: Path) -> tuple[SlurmScheduler, Path]:
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("sbatch", "squeue", "scancel", "sacct"):
        (bin_dir / tool).write_text(STANDIN)
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FNRELAY_CALLS": str(calls)}
    return SlurmScheduler(timeout=10, env=env), calls


def test_the_cluster_of_a_submitted_job_is_kept(sched, tmp_path):
    scheduler, _ = sched
    assert scheduler.submit(tmp_path / "job.sh", "fnrelay-a", tmp_path) == "1234;c2"


def test_a_job_on_another_cluster_is_queried_and_cancelled_there(sched):
    scheduler, calls = sched
    statuses = scheduler.status(["1234;c2", "77"])
    assert statuses["1234;c2"].state is JobState.QUEUED  # not lost while it waits on c2
    assert statuses["77"].state is JobState.RUNNING
    scheduler.cancel("1234;c2")
    lines = calls.read_text().splitlines()
    assert any(line.startswith("squeue -M c2 ") and "--jobs=1234 " in line for line in lines)
    assert any(line.startswith("squeue --noheader") and "--jobs=77 " in line for line in lines)
    assert "scancel -M c2 1234" in lines


def test_sacct_tells_the_final_state_of_a_forgotten_job(sched):
    scheduler, calls = sched
    found = scheduler.history(["1234;c2", "55", "56"])
    assert found["1234;c2"].state is JobState.FAILED  # the last run's row wins
    assert found["55"].state is JobState.FAILED and "CANCELLED" in found["55"].native_state
    assert "56" not in found  # sacct does not know it either: still unknown
    assert any(line.startswith("sacct -M c2 ") and "--jobs=1234 " in line
               for line in calls.read_text().splitlines())


def test_without_accounting_sacct_is_asked_once(sched):
    scheduler, calls = sched
    scheduler.env = {**(scheduler.env or {}), "FNRELAY_NO_ACCOUNTING": "1"}
    assert scheduler.history(["55"]) == {}
    assert scheduler.history(["55"]) == {}
    assert sum(line.startswith("sacct") for line in calls.read_text().splitlines()) == 1


def test_the_engine_settles_a_forgotten_job_from_sacct_at_once(sched, tmp_path):
    """No waiting `lost_after` (an hour here) when accounting knows the job failed."""
    scheduler, _ = sched
    task = TaskMessage(task_id="t1", function_id="f", function="", payload="")
    sandbox = Sandbox.of(tmp_path / "ep", task.task_id)
    sandbox.create()
    sandbox.write_task(task)
    sandbox.write_job_id("55")  # squeue no longer knows it; sacct: CANCELLED by an admin
    done = threading.Event()
    results = []
    engine = BatchEngine({"scheduler": "slurm", "poll_interval": 0.1, "lost_after": 3600},
                         tmp_path / "ep", lambda r: (results.append(r), done.set()),
                         lambda _u: None, scheduler=scheduler)
    engine.start()
    try:
        assert done.wait(10), "not settled from sacct"
    finally:
        engine.shutdown()
    assert results[0].details["scheduler_state"].startswith("CANCELLED")


def test_the_lookup_before_a_resubmit_asks_the_tasks_clusters(sched):
    """A crash between sbatch and journaling the id: the job on c2 is found, not resubmitted."""
    scheduler, calls = sched
    assert scheduler.find_by_name("fnrelay-a", "c2") == "1234;c2"
    assert any(line.startswith("squeue -M c2 ") and "--name=fnrelay-a" in line
               for line in calls.read_text().splitlines())


def test_the_engine_adopts_a_job_sbatch_put_on_another_cluster(sched, tmp_path):
    """The engine's lookup names the task's `clusters`: the job found on c2 is watched there
    and sbatch is not run a second time."""
    scheduler, calls = sched
    calls.touch()
    task = TaskMessage(task_id="t2", function_id="f", function="", payload="",
                       resource_specification={"clusters": "c2"})
    statuses = []
    engine = BatchEngine({"scheduler": "slurm", "poll_interval": 0.1}, tmp_path / "ep",
                         lambda _r: None, statuses.append, scheduler=scheduler)
    engine.start()
    try:
        engine.submit(task)
        deadline = time.monotonic() + 10
        while "squeue -M c2 --noheader --states=all" not in calls.read_text() \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        engine.shutdown()
    lines = calls.read_text().splitlines()
    assert not any(line.startswith("sbatch") for line in lines)
    assert Sandbox.of(tmp_path / "ep", "t2").job_id() == "1234;c2"
