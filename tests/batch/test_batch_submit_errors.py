"""Submission errors on the real one-node Slurm: transient ones back off, permanent ones fail.

A stand-in `sbatch` earlier on PATH fails its first calls with a message real sbatch prints
when slurmctld is busy or a per-user submit limit is reached, records every call, and then
runs the real sbatch, so the job that follows is a real one.
"""

from __future__ import annotations

import pytest

from fnrelay import serialize
from fnrelay.wire import TaskState

WAIT = 60.0  # upper bound for the cluster to act, not a timing assertion


def answer():
    return 42


@pytest.mark.parametrize("message", [
    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
    "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: "
    "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
])
def test_transient_sbatch_errors_back_off_and_submit_again(make_batch_engine, make_task,
                                                           stand_in_sbatch, message):
    calls = stand_in_sbatch(failures=2, message=message)
    engine, rec = make_batch_engine()
    task = make_task(answer)
    engine.submit(task)
    result = rec.result(task.task_id, timeout=WAIT)
    assert result.status == TaskState.SUCCESS.value, result.exception
    assert serialize.deserialize(result.result) == 42
    assert len(calls.read_text().splitlines()) == 3  # two refusals, then the real job


def test_a_permanent_sbatch_error_fails_at_once_with_the_message(make_batch_engine, make_task,
                                                                 stand_in_sbatch):
    calls = stand_in_sbatch()
    engine, rec = make_batch_engine()
    task = make_task(answer, resource_specification={"partition": "nosuchpartition"})
    engine.submit(task)
    result = rec.result(task.task_id, timeout=10)
    assert result.status == TaskState.FAILED.value
    assert "invalid partition" in result.exception.message.lower()
    assert len(calls.read_text().splitlines()) == 1
