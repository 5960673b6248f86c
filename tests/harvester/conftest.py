"""Fixtures for the Harvester plugins: queue configs on the session's real broker and endpoint,
WorkSpec doubles with their own access points, and a Harvester-like monitor loop."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from workspec import WorkSpec  # noqa: E402

#: Upper bound for workers to reach a final state on an idle endpoint; not a timing assertion.
WAIT = 120.0
_worker_ids = itertools.count(1000)


@pytest.fixture
def access_base(tmp_path: Path) -> Path:
    base = tmp_path / "workers"
    base.mkdir()
    return base


@pytest.fixture
def queue_config(broker_url: str, alice_token: str, endpoint_id: str, access_base: Path
                 ) -> dict[str, Any]:
    """The keys of a panda_queueconfig.json entry the plugins read (local engine endpoint)."""
    return {"broker_url": broker_url, "token": alice_token, "endpoint_id": endpoint_id,
            "nCorePerNode": 4, "queueName": "FNRELAY_TEST", "accessPointBase": str(access_base),
            "executable": "echo pilot {workerID} at {accessPoint}"}


@pytest.fixture
def make_worker(access_base: Path) -> Callable[..., WorkSpec]:
    """make_worker(**attrs) -> a new WorkSpec with a unique workerID and its access point."""

    def make(**attrs: Any) -> WorkSpec:
        worker_id = attrs.pop("workerID", next(_worker_ids))
        values = {"workerID": worker_id, "nCore": 1, "minRamCount": 100, "maxWalltime": 600,
                  "jobType": "managed", "computingSite": "FNRELAY_TEST",
                  "accessPoint": str(access_base / str(worker_id)), "status": "submitted"}
        values.update(attrs)
        return WorkSpec(**values)

    return make


@pytest.fixture(name="watch")
def _watch() -> Callable[..., list[tuple[str | None, str]]]:
    """watch(monitor, workers, until=None, timeout=WAIT): see `watch`."""
    return watch


def watch(monitor: Any, workers: list[WorkSpec], until: Callable[[WorkSpec], bool] | None = None,
          timeout: float = WAIT) -> list[tuple[str | None, str]]:
    """Run check_workers as Harvester's monitor agent does until `until` holds for every
    worker (default: a final status); returns the last check's answers."""
    until = until or (lambda w: w.is_final_status())
    deadline = time.monotonic() + timeout
    while True:
        ok, answers = monitor.check_workers(workers)
        assert ok is True and len(answers) == len(workers)
        for worker, (status, diag) in zip(workers, answers, strict=True):
            if status is not None:  # None: Harvester keeps the old status
                worker.set_status(status)
                worker.set_dialog_message(diag)
        if all(until(w) for w in workers):
            return answers
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; statuses {[w.status for w in workers]}")
        time.sleep(0.3)
