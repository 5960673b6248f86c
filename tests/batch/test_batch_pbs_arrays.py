"""engine.pack_window on PBS Professional: tasks of one specification go into one `qsub -J`,
each subjob is watched, cancelled (`qdel 1234[i]`) and settled as its own task.

PBS cannot run here: the stand-in (support/standin_pbs.py) checks qsub's documented array
options, runs every subjob's script with bash in the background and answers qstat and qdel in
PBS's formats, so the elements really run the tasks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from batch.conftest import Recorder, make_task

from fnrelay import serialize
from fnrelay.wire import TaskState
from fnrelay_endpoint.engines.batch.engine import BatchEngine
from support import standin_schedulers

WAIT = 60.0  # upper bound for the stand-in to run a task, not a timing assertion


def echo(value):
    import os

    return value, os.environ.get("PBS_ARRAY_INDEX"), os.environ.get("PBS_JOBID")


def wait_for(path):
    import pathlib
    import time

    deadline = time.monotonic() + 60
    while not pathlib.Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return "released"


def test_six_tasks_make_one_qsub_J_and_one_element_is_cancelled(tmp_path, monkeypatch):
    env = standin_schedulers.install("pbspro", tmp_path / "standin")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rec = Recorder()
    engine = BatchEngine({"type": "batch", "scheduler": "pbspro", "launcher": "none",
                          "pack_window": 1, "poll_interval": 0.2}, tmp_path / "endpoint",
                         rec.on_result, rec.on_status)
    engine.start()
    try:
        tasks = [make_task(echo, n) for n in range(5)]
        blocked = make_task(wait_for, str(tmp_path / "never"))
        for task in [*tasks[:3], blocked, *tasks[3:]]:
            engine.submit(task)
        indices = set()
        for n, task in enumerate(tasks):
            result = rec.result(task.task_id, timeout=WAIT)
            assert result.status == TaskState.SUCCESS.value, result.exception
            value, index, job_id = serialize.deserialize(result.result)
            assert value == n and job_id == result.details["batch_job_id"]
            assert re.fullmatch(rf"\d+\[{index}\]\.pbs01", job_id), job_id
            indices.add(index)
        assert len(indices) == 5  # five distinct subjobs

        update = rec.status(blocked.task_id, TaskState.RUNNING.value, timeout=WAIT)
        element = re.search(r"job (\S+)", update.detail).group(1)
        assert re.fullmatch(r"\d+\[\d\]\.pbs01", element), element
        assert engine.cancel(blocked.task_id)
        assert rec.result(blocked.task_id, timeout=WAIT).status == TaskState.CANCELLED.value
    finally:
        engine.shutdown()

    calls = standin_schedulers.calls(env)
    submits = [c["argv"] for c in calls if c["tool"] == "qsub"]
    assert len(submits) == 1 and submits[0][:4] == ["-J", "0-5", "-r", "y"], submits
    assert [c["argv"] for c in calls if c["tool"] == "qdel"] == [[element]]  # that one only
    state = Path(env["FNRELAY_STANDIN_DIR"]) / "pbs"
    assert len(list(state.glob("*.deleted"))) == 1


def test_the_stand_in_refuses_arrays_pbs_refuses(tmp_path):
    """What the stand-in enforces is PBS's documented behaviour, not the adapter's."""
    env = standin_schedulers.install("pbspro", tmp_path / "standin")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#PBS -r n\ntrue\n")

    def qsub(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["qsub", *args, str(script)], env={**env, "HOME": str(tmp_path)},
                              capture_output=True, text=True, cwd=tmp_path)

    refused = qsub("-J", "0-3")
    assert (refused.returncode, refused.stderr.strip()) == (
        1, "qsub: cannot submit non-rerunable Array Job")
    assert qsub("-J", "3-3", "-r", "y").stderr.strip() == "qsub: illegal -J value"
    assert re.fullmatch(r"\d+\[\]\.pbs01", qsub("-J", "0-3", "-r", "y").stdout.strip())
