"""The Harvester plugins against a batch endpoint on the real one-node Slurm: every worker its
own sbatch job, a killed worker's job scancelled."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from workspec import WorkSpec

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from fnrelay.harvester import FnRelayMonitor, FnRelaySubmitter, FnRelaySweeper  # noqa: E402
from support.slurm_fixtures import slurm_cluster  # noqa: E402, F401

SLURM_ENGINE = {"type": "batch", "scheduler": "slurm", "launcher": "srun", "poll_interval": 0.5}
#: Upper bound for a job to be scancelled and leave the queue; not a timing assertion.
WAIT = 120.0


@pytest.fixture
def slurm_config(slurm_cluster, make_endpoint, queue_config):  # noqa: F811
    ep = make_endpoint("harvester-slurm", engine=SLURM_ENGINE)
    return {**queue_config, "endpoint_id": ep.endpoint_id, "partition": "debug"}


def _slurm_job(client, task_id: str) -> str:
    details = [h["detail"] or "" for h in client.task_record(task_id)["history"]
               if h["status"] == "waiting-for-nodes"]
    match = re.search(r"\d+", details[0]) if details else None
    assert match, f"no slurm job id in the history of {task_id}"
    return match.group(0)


def test_workers_run_as_slurm_jobs_and_one_fails(client, slurm_config, make_worker, watch):
    config = {**slurm_config,
              "executable": "echo {workerID} job=$SLURM_JOB_ID; test {jobType} != bad || "
                            "{{ echo 'pilot {workerID} broke' >&2; exit 3; }}"}
    workers = [make_worker() for _ in range(4)]
    workers.append(make_worker(jobType="bad"))
    assert FnRelaySubmitter(**config).submit_workers(workers) == [(True, "")] * 5

    watch(FnRelayMonitor(**slurm_config), workers, timeout=240)

    for w in workers[:4]:
        assert (w.status, w.nativeExitCode) == (WorkSpec.ST_finished, 0), w.diagMessage
        job = _slurm_job(client, w.batchID)
        assert Path(w.log_file("stdout")).read_text() == f"{w.workerID} job={job}\n"
    bad = workers[4]
    assert (bad.status, bad.nativeExitCode) == (WorkSpec.ST_failed, 3)
    assert Path(bad.log_file("stderr")).read_text() == f"pilot {bad.workerID} broke\n"


def test_wide_worker_runs_mpi_across_its_ranks(slurm_config, make_worker, watch):
    config = {**slurm_config, "nCorePerNode": 2, "executable": "echo rank-of-{workerID}"}
    worker = make_worker(nCore=2, jobType="MPI")
    assert FnRelaySubmitter(**config).submit_workers([worker]) == [(True, "")]
    watch(FnRelayMonitor(**slurm_config), [worker], timeout=240)
    assert worker.status == WorkSpec.ST_finished, worker.diagMessage
    assert Path(worker.log_file("stdout")).read_text() == f"rank-of-{worker.workerID}\n" * 2


def test_killed_worker_is_scancelled(client, slurm_cluster, slurm_config,  # noqa: F811
                                     make_worker, watch):
    config = {**slurm_config, "executable": "sleep 300"}
    worker = make_worker()
    assert FnRelaySubmitter(**config).submit_workers([worker]) == [(True, "")]
    monitor = FnRelayMonitor(**slurm_config)
    watch(monitor, [worker], until=lambda w: w.status == WorkSpec.ST_running, timeout=240)
    job = _slurm_job(client, worker.batchID)

    assert FnRelaySweeper(**slurm_config).kill_worker(worker) == (True, "")
    watch(monitor, [worker])
    assert worker.status == WorkSpec.ST_cancelled

    deadline = time.monotonic() + WAIT
    while True:
        state = slurm_cluster.run("squeue", "-h", "--states=all", "-j", job, "-o", "%T",
                                  check=False).strip()
        if state in ("", "CANCELLED"):
            break
        assert time.monotonic() < deadline, f"slurm job {job} still {state}"
        time.sleep(0.5)
