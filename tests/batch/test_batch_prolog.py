"""A failing Prolog on a real one-node Slurm of its own drains the node. A job that may be
requeued (`requeue: true`) is requeued held ("launch failed requeued held"); the default
(`--no-requeue`) is cancelled with the Prolog's error. Either way the task fails, saying why.

It needs its own cluster (a Prolog is slurm.conf, and it drains the node), so the test
starts one (about 10 s) and stops it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch.conftest import Recorder, make_task

from fnrelay.wire import ResultMessage, TaskState
from fnrelay_endpoint.engines.batch.engine import BatchEngine
from fnrelay_endpoint.engines.batch.schedulers.slurm import SlurmScheduler
from support.slurm_cluster import SlurmCluster

WAIT = 60.0  # upper bound for the cluster to act, not a timing assertion


def noop():
    return None


@pytest.fixture
def failing_prolog_cluster(slurm_cluster) -> Iterator[SlurmCluster]:  # noqa: ARG001
    """After the shared cluster (whose SLURM_CONF it restores when it stops)."""
    root = Path(tempfile.mkdtemp(prefix="fnprolog-"))
    prolog = root / "prolog.sh"
    prolog.write_text("#!/bin/sh\necho 'fnrelay-test: prolog refuses' >&2\nexit 1\n")
    prolog.chmod(0o755)
    cluster = SlurmCluster(root / "c", cpus=2, extra_conf=(f"Prolog={prolog}",))
    try:
        with cluster:
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_one(cluster: SlurmCluster, workdir: Path, spec: dict) -> ResultMessage:
    rec = Recorder()
    scheduler = SlurmScheduler(env={**os.environ, "SLURM_CONF": str(cluster.conf)})
    engine = BatchEngine({"type": "batch", "scheduler": "slurm", "launcher": "srun",
                          "poll_interval": 0.5}, workdir, rec.on_result,
                         rec.on_status, scheduler=scheduler)
    engine.start()
    try:
        task = make_task(noop, resource_specification=spec)
        engine.submit(task)
        return rec.result(task.task_id, timeout=WAIT)
    finally:
        engine.shutdown()
        cluster.run("scontrol", "update", f"nodename={cluster.node}", "state=resume",
                    check=False)


def test_a_failing_prolog_fails_the_task_with_its_reason(failing_prolog_cluster, tmp_path):
    result = _run_one(failing_prolog_cluster, tmp_path / "a", {})
    assert result.status == TaskState.FAILED.value
    assert "prolog" in result.exception.message.lower()

    result = _run_one(failing_prolog_cluster, tmp_path / "b", {"requeue": True})
    assert result.status == TaskState.FAILED.value
    assert "launch failed requeued held" in result.exception.message
    assert result.details["held"] is True
