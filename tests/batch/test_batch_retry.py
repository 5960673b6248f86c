"""A node failure under a running task, on the real one-node Slurm: the endpoint retries the
task as a new job (new job id, new sandbox), unless the task lets Slurm requeue it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fnrelay import Executor, serialize
from fnrelay.wire import TaskState

WAIT = 90.0  # upper bound for the cluster to act, not a timing assertion
SLURM_ENGINE = {"type": "batch", "scheduler": "slurm", "launcher": "srun", "poll_interval": 0.5}


def hang_on_first_run(marker):
    """Records its job id and hangs the first time; later runs return their job id."""
    import os
    import pathlib
    import time

    path = pathlib.Path(marker)
    if not path.exists():
        path.write_text(os.environ["SLURM_JOB_ID"])
        time.sleep(120)
    return os.environ["SLURM_JOB_ID"]


def wait_for(check: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)
    return value


def job_state(slurm_cluster, job_id: str) -> str:
    return slurm_cluster.run("squeue", "-h", "--states=all", f"--jobs={job_id}", "-o", "%T",
                             check=False).strip()


@contextmanager
def node_down(slurm_cluster) -> Iterator[None]:
    """The node is DOWN inside the block and resumed however the block ends."""
    slurm_cluster.run("scontrol", "update", f"nodename={slurm_cluster.node}", "state=down",
                      "reason=fnrelay-test")
    try:
        yield
    finally:
        slurm_cluster.run("scontrol", "update", f"nodename={slurm_cluster.node}",
                          "state=resume", check=False)


def started_job(marker: Path) -> str:
    return str(wait_for(lambda: marker.exists() and marker.read_text(), "the first run"))


def test_node_failure_resubmits_the_task_as_a_new_job(slurm_cluster, make_endpoint, client,
                                                      tmp_path):
    ep = make_endpoint("retry", engine=SLURM_ENGINE)
    marker = tmp_path / "first-run"
    with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
        future = ex.submit(hang_on_first_run, str(marker))
        first = started_job(marker)
        with node_down(slurm_cluster):
            down = time.time()
            wait_for(lambda: job_state(slurm_cluster, first) == "NODE_FAIL", "NODE_FAIL")
        second = future.result(timeout=WAIT)
        task_id = future.task_id
    assert second != first
    history = client.task_record(task_id)["history"]
    resubmitted = [h for h in history if h["status"] == "waiting-for-nodes"
                   and f"job {second}" in h["detail"]]
    assert resubmitted and resubmitted[0]["time"] - down < 30, history
    retried = slurm_cluster.run("squeue", "-h", "--states=all",
                                f"--name=fnrelay-{task_id}-attempt2", "-o", "%i").split()
    assert retried in ([], [second])  # the new job's name (MinJobAge may have purged it)
    sandboxes = {p.name for p in Path(ep.home).rglob(f"{task_id}*") if p.is_dir()}
    assert sandboxes == {task_id, f"{task_id}@2"}


def test_requeue_true_lets_slurm_rerun_the_same_job_and_settles_once(
        slurm_cluster, make_batch_engine, make_task, tmp_path):
    engine, rec = make_batch_engine()
    marker = tmp_path / "first-run"
    task = make_task(hang_on_first_run, str(marker), resource_specification={"requeue": True})
    engine.submit(task)
    first = started_job(marker)
    with node_down(slurm_cluster):
        wait_for(lambda: job_state(slurm_cluster, first) == "PENDING", "Slurm to requeue the job")
    assert task.task_id not in rec.results  # requeued: still the task's one job, not a failure
    # Slurm holds a requeued job back (BeginTime) for a couple of minutes: start it now.
    slurm_cluster.run("scontrol", "update", f"jobid={first}", "starttime=now")
    result = rec.result(task.task_id, timeout=WAIT * 2)
    assert result.status == TaskState.SUCCESS.value, result.exception
    assert serialize.deserialize(result.result) == first  # the same job id, run again
    time.sleep(1.0)  # a few more polls: nothing else is reported
    assert len(rec.results[task.task_id]) == 1


def job_id_now():
    import os

    return os.environ["SLURM_JOB_ID"]


def test_each_attempt_is_its_own_job_and_sandbox(make_batch_engine, make_task, tmp_path):
    """The agent's retry (attempt 2) never replays attempt 1's result or re-watches its job."""
    engine, rec = make_batch_engine(tmp_path / "ep")
    task = make_task(job_id_now)
    engine.submit(task)
    first = serialize.deserialize(rec.result(task.task_id).result)
    rec.results.clear()
    engine.submit(dataclasses.replace(task, attempt=2))
    result = rec.result(task.task_id)
    assert result.status == TaskState.SUCCESS.value, result.exception
    assert serialize.deserialize(result.result) != first
    assert sorted(p.name for p in (tmp_path / "ep" / "tasks").iterdir()) == \
        [task.task_id, f"{task.task_id}@2"]
