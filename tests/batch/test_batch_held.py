"""Held and never-runnable jobs on the real one-node Slurm: the task fails with the reason.

Slurm accepts a job the partition can never run (EnforcePartLimits=NO, the default) and keeps
a held job pending until someone releases it: without these checks the task waits forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from fnrelay.wire import TaskState

#: Upper bound for the engine to notice and settle, not a timing assertion.
WAIT = 30.0


def noop():
    return None


@pytest.fixture(scope="module")
def partitions(slurm_cluster) -> Iterator[dict[str, str]]:
    """A partition with a one-minute MaxTime and one that is down (jobs pend there)."""
    made = {"short": "fnshort", "down": "fndown"}
    slurm_cluster.run("scontrol", "create", f"PartitionName={made['short']}", "Nodes=ALL",
                      "MaxTime=1", "State=UP")
    slurm_cluster.run("scontrol", "create", f"PartitionName={made['down']}", "Nodes=ALL",
                      "State=DOWN")
    yield made
    slurm_cluster.run("scancel", "--full", "--user=root", check=False)
    for name in made.values():
        slurm_cluster.run("scontrol", "delete", f"PartitionName={name}", check=False)


def job_id(rec, task) -> str:
    update = rec.status(task.task_id, TaskState.WAITING_FOR_NODES.value, timeout=WAIT)
    return re.search(r"job (\d+)", update.detail).group(1)


def assert_failed_and_cancelled(rec, task, slurm_cluster, words: str) -> None:
    result = rec.result(task.task_id, timeout=WAIT)
    assert result.status == TaskState.FAILED.value
    assert words in result.exception.message
    assert result.details["held"] is True
    states = [s for s in squeue_states(slurm_cluster, task) if s != "CANCELLED"]
    assert not states, f"the job was left in the queue: {states}"


def squeue_states(slurm_cluster, task) -> list[str]:
    out = slurm_cluster.run("squeue", "-h", "--states=all", f"--name=fnrelay-{task.task_id}",
                            "-o", "%T")
    return out.split()


def test_walltime_beyond_the_partition_limit_fails_with_partition_time_limit(
        make_batch_engine, make_task, partitions, slurm_cluster):
    engine, rec = make_batch_engine()
    task = make_task(noop, resource_specification={"partition": partitions["short"],
                                                   "walltime": 600})
    engine.submit(task)
    assert_failed_and_cancelled(rec, task, slurm_cluster, "PartitionTimeLimit")


def test_a_job_held_by_the_user_fails_with_job_held_user(make_batch_engine, make_task,
                                                         partitions, slurm_cluster):
    engine, rec = make_batch_engine()
    task = make_task(noop, resource_specification={"partition": partitions["down"]})
    engine.submit(task)
    slurm_cluster.run("scontrol", "uhold", job_id(rec, task))
    assert_failed_and_cancelled(rec, task, slurm_cluster, "JobHeldUser")


def test_max_pending_fails_a_job_that_waits_too_long(make_batch_engine, make_task, partitions,
                                                     slurm_cluster):
    engine, rec = make_batch_engine(max_pending=2)
    task = make_task(noop, resource_specification={"partition": partitions["down"]})
    engine.submit(task)
    job_id(rec, task)
    assert_failed_and_cancelled(rec, task, slurm_cluster, "engine.max_pending")


def test_a_pending_job_without_max_pending_keeps_waiting(make_batch_engine, make_task,
                                                         partitions, slurm_cluster):
    engine, rec = make_batch_engine()
    task = make_task(noop, resource_specification={"partition": partitions["down"]})
    engine.submit(task)
    job_id(rec, task)
    with pytest.raises(AssertionError, match="gave up"):
        rec.result(task.task_id, timeout=3)
    assert squeue_states(slurm_cluster, task) == ["PENDING"]
