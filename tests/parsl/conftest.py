"""Fixtures of the parsl engine tests: an engine harness (real Parsl, real workers) and the
session's one-node Slurm cluster."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from fnrelay import serialize  # noqa: E402
from fnrelay.wire import ResultMessage, StatusUpdate, TaskMessage  # noqa: E402
from fnrelay_endpoint.engines.parsl.engine import ParslEngine  # noqa: E402
from support.slurm_fixtures import slurm_cluster  # noqa: E402, F401

#: Heartbeats short enough that a lost worker pool is noticed in seconds.
FAST = {"heartbeat_period": 1, "heartbeat_threshold": 4, "strategy_period": 0.5,
        "poll_period": 1, "max_idletime": 30, "status_poll_period": 2}


class Harness:
    """A started ParslEngine plus what it reported."""

    def __init__(self, config: dict[str, Any], workdir: Path):
        self.results: dict[str, ResultMessage] = {}
        self.statuses: list[StatusUpdate] = []
        self._cond = threading.Condition()
        self.engine = ParslEngine({**FAST, **config}, workdir, self._on_result, self._on_status)
        self.engine.start()

    def _on_result(self, result: ResultMessage) -> None:
        with self._cond:
            assert result.task_id not in self.results, "a task reported twice"
            self.results[result.task_id] = result
            self._cond.notify_all()

    def _on_status(self, update: StatusUpdate) -> None:
        with self._cond:
            self.statuses.append(update)
            self._cond.notify_all()

    def submit(self, fn: Callable, *args: Any, resource_specification: dict | None = None,
               submitter: str | None = None, **kwargs: Any) -> str:
        task_id = str(uuid.uuid4())
        self.engine.submit(TaskMessage(
            task_id=task_id, function_id=f"f-{id(fn)}", function=serialize.serialize(fn),
            payload=serialize.serialize_args(args, kwargs), task_group_id="g",
            resource_specification=resource_specification or {}, submitter=submitter))
        return task_id

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait(self, task_ids: list[str], timeout: float = 120) -> dict[str, ResultMessage]:
        """Results of `task_ids`; fails the test if any is missing after `timeout`."""
        ok = self.wait_for(lambda: all(t in self.results for t in task_ids), timeout)
        missing = [t for t in task_ids if t not in self.results]
        assert ok, f"{len(missing)} of {len(task_ids)} tasks reported no result (hung)"
        return {t: self.results[t] for t in task_ids}

    @staticmethod
    def value(result: ResultMessage) -> Any:
        """The task's return value (fails with the remote error if the task failed)."""
        assert result.status == "success", result.exception
        return serialize.deserialize(result.result)

    def states(self, task_id: str) -> list[str]:
        with self._cond:
            return [s.status for s in self.statuses if s.task_id == task_id]

    def running(self, task_id: str) -> bool:
        return "running" in self.states(task_id)


@pytest.fixture
def parsl_engine(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """parsl_engine(**engine_config) -> a started Harness; shut down at teardown."""
    made: list[Harness] = []

    def make(**config: Any) -> Harness:
        h = Harness({"type": "parsl", **config}, tmp_path / f"ep{len(made)}")
        made.append(h)
        return h

    yield make
    for h in made:
        h.engine.shutdown()



@pytest.fixture(scope="module")
def slurm_engine(slurm_cluster, tmp_path_factory) -> Iterator[Harness]:  # noqa: F811
    """One Slurm-provider engine per module: pilot jobs take seconds to start."""
    h = Harness({"type": "parsl", "provider": "slurm", "exclusive": False,
                 "walltime": "00:10:00", "max_blocks": 2, "max_workers_per_node": 4,
                 "init_blocks": 1, "cores_per_node": 2, "mpi": {"launcher": "srun"}},
                tmp_path_factory.mktemp("slurm-ep"))
    yield h
    h.engine.shutdown()
