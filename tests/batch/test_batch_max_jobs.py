"""engine.max_jobs on the real one-node Slurm: tasks beyond the cap wait in the endpoint."""

from __future__ import annotations

from fnrelay import serialize
from fnrelay.wire import TaskState

WAIT = 60.0  # upper bound for the cluster to act, not a timing assertion


def wait_for(path, value):
    import pathlib
    import time

    deadline = time.monotonic() + 60
    while not pathlib.Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_tasks_beyond_max_jobs_wait_unsubmitted_and_can_be_cancelled(
        make_batch_engine, make_task, squeue, tmp_path):
    engine, rec = make_batch_engine(max_jobs=1)
    release = tmp_path / "release"
    first, second, third = (make_task(wait_for, str(release), n) for n in (1, 2, 3))
    for task in (first, second, third):
        engine.submit(task)
    rec.status(first.task_id, TaskState.RUNNING.value, timeout=WAIT)
    for task in (second, third):
        assert squeue(f"fnrelay-{task.task_id}") == []
        assert task.task_id not in rec.results
    assert engine.info()["submitting"] == 2
    # What heartbeats tell the broker's /metrics (fnrelay_endpoint_batch_jobs).
    assert engine.info()["jobs_by_state"] == {"submitted": 0, "queued": 0, "running": 1}

    assert engine.cancel(third.task_id)
    cancelled = rec.result(third.task_id, timeout=5)
    assert cancelled.status == TaskState.CANCELLED.value

    release.touch()
    for task, n in ((first, 1), (second, 2)):
        result = rec.result(task.task_id, timeout=WAIT)
        assert result.status == TaskState.SUCCESS.value, result.exception
        assert serialize.deserialize(result.result) == n
    assert squeue(f"fnrelay-{third.task_id}") == []  # never submitted
    assert engine.info()["jobs_by_state"] == {"submitted": 0, "queued": 0, "running": 0}


def test_a_lone_users_task_gets_the_next_job_before_another_users_backlog(
        make_batch_engine, make_task, tmp_path):
    """Tasks waiting for a job slot take turns across submitters (engines/fair_queue.py):
    with one job at a time, Bob's lone task runs second, not after Mallory's whole backlog."""
    import dataclasses

    engine, rec = make_batch_engine(max_jobs=1)
    release = tmp_path / "release"
    flood = [dataclasses.replace(make_task(wait_for, str(release), n), submitter="mallory")
             for n in range(4)]
    lone = dataclasses.replace(make_task(wait_for, str(release), "bob"), submitter="bob")
    for task in (*flood, lone):
        engine.submit(task)
    rec.status(flood[0].task_id, TaskState.RUNNING.value, timeout=WAIT)
    release.touch()
    assert serialize.deserialize(rec.result(lone.task_id, timeout=WAIT).result) == "bob"
    flood_done = sum(t.task_id in rec.results for t in flood)
    for n, task in enumerate(flood):
        assert serialize.deserialize(rec.result(task.task_id, timeout=WAIT).result) == n
    assert flood_done <= 2, f"the lone task ran after {flood_done} of the backlog's 4"
