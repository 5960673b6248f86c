"""A job the real Slurm no longer knows, with no exit status in its sandbox, is waited for
(`lost_after`, default minutes, not 3 polls) before it is reported lost. There is no slurmdbd
here, so this also proves sacct's refusal ("accounting storage is disabled") is harmless."""

from __future__ import annotations

import time

from fnrelay.wire import TaskState
from fnrelay_endpoint.engines.batch.sandbox import Sandbox


def identity(x):
    return x


def vanished_job(workdir, task) -> None:
    """A sandbox whose journaled job Slurm never knew (as if purged, the node dead)."""
    sandbox = Sandbox.of(workdir, task.task_id)
    sandbox.create()
    sandbox.write_task(task)
    sandbox.write_job_id("999999")


def test_a_vanished_job_is_not_declared_lost_after_a_few_polls(make_batch_engine, make_task,
                                                                tmp_path):
    task = make_task(identity, 1)
    vanished_job(tmp_path / "ep", task)
    _, rec = make_batch_engine(tmp_path / "ep", poll_interval=0.1)
    time.sleep(1.5)  # fifteen polls
    assert task.task_id not in rec.results


def test_a_vanished_job_is_lost_once_lost_after_has_passed(make_batch_engine, make_task,
                                                           tmp_path):
    task = make_task(identity, 1)
    vanished_job(tmp_path / "ep", task)
    start = time.monotonic()
    _, rec = make_batch_engine(tmp_path / "ep", poll_interval=0.1, lost_after=1)
    result = rec.result(task.task_id, timeout=30)
    assert time.monotonic() - start >= 1
    assert result.status == TaskState.FAILED.value
    assert result.details["infrastructure"] is True  # the agent retries it as a new job
    assert "no longer knows job 999999" in result.exception.message
