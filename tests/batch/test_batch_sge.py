"""The batch engine on the real one-host Son of Grid Engine: a task is its own qsub job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from batch.conftest import Recorder, make_task

from fnrelay import ShellFunction, serialize
from fnrelay.wire import TaskState
from fnrelay_endpoint.engines.batch.engine import BatchEngine
from support.sge_fixtures import sge_cell  # noqa: F401

pytestmark = pytest.mark.slow


def where():
    import os

    return os.environ.get("JOB_ID"), os.environ.get("QUEUE"), os.getcwd()


@pytest.fixture
def sge_engine(sge_cell, tmp_path: Path) -> Iterator[tuple[BatchEngine, Recorder]]:  # noqa: F811
    recorder = Recorder()
    engine = BatchEngine({"type": "batch", "scheduler": "sge", "launcher": "none",
                          "poll_interval": 0.5}, tmp_path / "endpoint", recorder.on_result,
                         recorder.on_status)
    engine.start()
    yield engine, recorder
    engine.shutdown()


def test_a_python_task_and_a_shell_task_run_as_grid_engine_jobs(sge_engine):
    engine, rec = sge_engine
    python_task = make_task(where, resource_specification={"walltime": 600, "memory": "1G"})
    shell_task = make_task(ShellFunction("echo out; exit 4"))
    engine.submit(python_task)
    engine.submit(shell_task)
    result = rec.result(python_task.task_id)
    assert result.status == TaskState.SUCCESS.value, result.exception
    job_id, queue, cwd = serialize.deserialize(result.result)
    assert job_id == result.details["batch_job_id"] and queue == "fnrelay.q"
    assert cwd.endswith(python_task.task_id)  # ran in its sandbox
    shell = rec.result(shell_task.task_id)
    out = serialize.deserialize(shell.result)
    assert (out.returncode, out.stdout.strip()) == (4, "out")


def test_a_task_refused_by_qsub_fails_with_grid_engines_words(sge_engine):
    engine, rec = sge_engine
    task = make_task(where, resource_specification={"num_ranks": 2})  # no PE in pe_list NONE
    engine.submit(task)
    result = rec.result(task.task_id)
    assert result.status == TaskState.FAILED.value
    assert "parallel environment" in result.exception.message


def test_a_job_held_with_qhold_fails_naming_the_hold(sge_cell, tmp_path):  # noqa: F811
    """A real user hold (qhold) on a queued job: the task fails with the hold's name and the
    job is deleted, as Slurm's JobHeldUser. `-a` (a start time far ahead) keeps the job queued
    until the hold is on."""
    rec = Recorder()
    engine = BatchEngine({"type": "batch", "scheduler": "sge", "launcher": "none",
                          "poll_interval": 0.5,
                          "defaults": {"scheduler_options": ["#$ -a 209912312359"]}},
                         tmp_path / "endpoint", rec.on_result, rec.on_status)
    engine.start()
    try:
        task = make_task(where)
        engine.submit(task)
        queued = rec.status(task.task_id, TaskState.WAITING_FOR_NODES.value)
        job_id = queued.detail.split()[-1]
        sge_cell.run("qhold", job_id)
        result = rec.result(task.task_id)
    finally:
        engine.shutdown()
    assert result.status == TaskState.FAILED.value
    assert "user hold (qhold -h u)" in result.exception.message, result.exception.message
    assert result.details.get("held") is True
    listed = sge_cell.run("qstat", "-u", "*", check=False).stdout.split()
    assert job_id not in listed  # deleted with its failure: a later qrls cannot run it
