"""Fixtures for the batch engine on the real one-node Slurm: an engine factory, a recorder of
its callbacks and real TaskMessages built with fnrelay.serialize."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fnrelay import serialize
from fnrelay.wire import ResultMessage, StatusUpdate, TaskMessage
from fnrelay_endpoint.engines.batch.engine import BatchEngine

#: Upper bound for a job to start and finish on the idle test cluster, not a timing assertion.
WAIT = 90.0


class Recorder:
    """Collects an engine's callbacks; wait_* block until something arrives (or give up)."""

    def __init__(self) -> None:
        self.results: dict[str, list[ResultMessage]] = {}
        self.statuses: list[StatusUpdate] = []
        self._cond = threading.Condition()

    def on_result(self, result: ResultMessage) -> None:
        with self._cond:
            self.results.setdefault(result.task_id, []).append(result)
            self._cond.notify_all()

    def on_status(self, update: StatusUpdate) -> None:
        with self._cond:
            self.statuses.append(update)
            self._cond.notify_all()

    def _wait(self, check: Callable[[], Any], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (value := check()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"gave up waiting for {what}")
                self._cond.wait(left)
            return value

    def result(self, task_id: str, timeout: float = WAIT) -> ResultMessage:
        found = self._wait(lambda: self.results.get(task_id), f"the result of {task_id}",
                           timeout)
        return found[0]

    def status(self, task_id: str, status: str, timeout: float = WAIT) -> StatusUpdate:
        def check() -> StatusUpdate | None:
            return next((u for u in self.statuses
                         if u.task_id == task_id and u.status == status), None)

        return self._wait(check, f"status {status} of {task_id}", timeout)

    def statuses_of(self, task_id: str) -> list[str]:
        with self._cond:
            return [u.status for u in self.statuses if u.task_id == task_id]


def make_task(fn: Callable, *args: Any, resource_specification: dict | None = None,
              **kwargs: Any) -> TaskMessage:
    """A TaskMessage as the broker would send it."""
    return TaskMessage(
        task_id=str(uuid.uuid4()), function_id=str(uuid.uuid4()),
        function=serialize.serialize_function(fn), payload=serialize.serialize_args(args, kwargs),
        task_group_id=str(uuid.uuid4()), resource_specification=resource_specification or {},
    )


def batch_config(**overrides: Any) -> dict[str, Any]:
    """The engine config the tests use: Slurm, srun, fast polling."""
    return {"type": "batch", "scheduler": "slurm", "launcher": "srun", "poll_interval": 0.5,
            **overrides}


@pytest.fixture
def make_batch_engine(slurm_cluster, tmp_path: Path  # noqa: F811
                      ) -> Iterator[Callable[..., tuple[BatchEngine, Recorder]]]:
    """make_batch_engine(workdir=None, start=True, **config) -> (started engine, recorder)."""
    made: list[BatchEngine] = []

    def make(workdir: Path | None = None, start: bool = True,
             **config: Any) -> tuple[BatchEngine, Recorder]:
        recorder = Recorder()
        engine = BatchEngine(batch_config(**config), workdir or tmp_path / "endpoint",
                             recorder.on_result, recorder.on_status)
        if start:
            engine.start()
        made.append(engine)
        return engine, recorder

    yield make
    for engine in made:
        engine.shutdown()
    slurm_cluster.run("scancel", "--full", "--user=root", check=False)


@pytest.fixture(name="make_task")
def _make_task() -> Callable[..., TaskMessage]:
    """make_task(fn, *args, resource_specification=None, **kwargs) -> TaskMessage."""
    return make_task


@pytest.fixture
def squeue(slurm_cluster) -> Callable[[str], list[str]]:  # noqa: F811
    """squeue(job_name) -> ids of every job of that name slurmctld still knows."""

    def ids(name: str) -> list[str]:
        out = slurm_cluster.run("squeue", "-h", "--states=all", f"--name={name}", "-o", "%i")
        return out.split()

    return ids


STANDIN_SBATCH = """#!/bin/sh
echo "$*" >> {calls}
n=$(wc -l < {calls})
if [ "$n" -le {failures} ]; then
    echo {message!r} >&2
    exit 1
fi
exec {real} "$@"
"""


@pytest.fixture
def stand_in_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """stand_in_sbatch(failures=0, message="") -> file of recorded calls.

    Puts an `sbatch` first on PATH that records its arguments, fails its first `failures`
    calls with `message` on stderr (what real sbatch prints), then runs the real sbatch.
    """

    def make(failures: int = 0, message: str = "") -> Path:
        bin_dir = tmp_path / "standin-bin"
        bin_dir.mkdir()
        calls = bin_dir / "calls"
        calls.touch()
        script = bin_dir / "sbatch"
        script.write_text(STANDIN_SBATCH.format(calls=calls, failures=failures, message=message,
                                                real=shutil.which("sbatch")))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        return calls

    return make
