"""How `make test` splits the suite across pytest-xdist workers (`-n 2 --dist loadfile`).

Most of the suite waits on servers, schedulers and subprocesses, not on the CPU: two workers
take about half the time on two cores. A whole module goes to one worker (its module fixtures
start their servers once); every worker has session servers of its own (RabbitMQ, broker,
Slurm, PostgreSQL). The modules that use one of the machine's fixed resources share a scope
here, so one worker runs them one after the other.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Modules that must not run beside each other, by the resource they share.
SHARED = {
    # The official SDK reaches a self-hosted service only at localhost:5000.
    "tests/gc/test_official_sdk.py": "port 5000",
    "tests/gc/test_official_endpoint.py": "port 5000",
    "tests/gc/test_tutorial.py": "port 5000",
    # Debian's Grid Engine cell: one per machine, fixed root and ports (sge_fixtures).
    "tests/schedulers/test_sge.py": "grid engine",
    "tests/batch/test_batch_sge.py": "grid engine",
    "tests/parsl/test_parsl_grid_engine.py": "grid engine",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the modules of SHARED grouped by their resource."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    missing = [p for p in SHARED if not (config.rootpath / p).is_file()]
    if missing:  # a renamed module would silently run beside the one it must not
        raise pytest.UsageError(f"tests/support/workers.py names missing modules: {missing}")

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SHARED.get(path, path)

    return Scheduling(config, log)
