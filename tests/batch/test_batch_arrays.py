"""engine.pack_window on the real one-node Slurm: tasks of one specification share an array,
while each element is watched, cancelled and settled as its own task."""

from __future__ import annotations

import re

from fnrelay import serialize
from fnrelay.wire import TaskState

WAIT = 60.0  # upper bound for the cluster to act, not a timing assertion


def job_id_of(update) -> str:
    return re.search(r"job (\S+)", update.detail).group(1)


def echo(value):
    import os

    return value, os.environ.get("SLURM_ARRAY_TASK_ID")


def wait_for(path):
    import pathlib
    import time

    deadline = time.monotonic() + 60
    while not pathlib.Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return "released"


def test_tasks_of_one_specification_make_one_array_and_cancel_per_element(
        make_batch_engine, make_task, stand_in_sbatch, slurm_cluster, tmp_path):
    calls = stand_in_sbatch()
    engine, rec = make_batch_engine(pack_window=1)
    tasks = [make_task(echo, n) for n in range(5)]
    blocked = make_task(wait_for, str(tmp_path / "never"))
    other = make_task(echo, "own job", resource_specification={"walltime": 120})
    for task in [*tasks, blocked, other]:
        engine.submit(task)

    for n, task in enumerate(tasks):
        result = rec.result(task.task_id, timeout=WAIT)
        assert result.status == TaskState.SUCCESS.value, result.exception
        value, index = serialize.deserialize(result.result)
        assert value == n and index is not None  # ran as an array element
    own = rec.result(other.task_id, timeout=WAIT)
    assert serialize.deserialize(own.result) == ("own job", None)

    element = job_id_of(rec.status(blocked.task_id, TaskState.RUNNING.value, timeout=WAIT))
    assert engine.cancel(blocked.task_id)
    assert rec.result(blocked.task_id, timeout=10).status == TaskState.CANCELLED.value
    state = slurm_cluster.run("squeue", "-h", "--states=all", "--array", f"--jobs={element}",
                              "-O", "State", check=False).split()
    assert state in ([], ["CANCELLED"], ["COMPLETING"]), state  # no longer running

    submissions = calls.read_text().splitlines()
    assert len(submissions) == 2, submissions  # one array of 6, one job of another spec
    assert sum("--array=0-5" in line for line in submissions) == 1
