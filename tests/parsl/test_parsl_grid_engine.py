"""The parsl engine with Parsl's own GridEngineProvider, by type, on the real SGE cell.

Its own module: functions of a module that imports the SGE fixture would pickle a reference
to `support`, which Parsl's workers cannot import.
"""

from __future__ import annotations

import pytest

from fnrelay import ShellFunction
from support.sge_fixtures import sge_cell  # noqa: F401


@pytest.mark.slow
def test_a_typed_grid_engine_provider_runs_a_task_in_a_real_pilot_job(
        parsl_engine, sge_cell):  # noqa: F811
    h = parsl_engine(provider={"type": "GridEngineProvider", "init_blocks": 1, "max_blocks": 1,
                               "walltime": "00:05:00", "queue": "fnrelay.q"},
                     max_workers_per_node=1, mpi={"enabled": False})
    # a shell command: Grid Engine passes no environment, so the test modules do not import
    [result] = h.wait([h.submit(ShellFunction("echo $JOB_ID $QUEUE"))], timeout=150).values()
    job_id, queue = h.value(result).stdout.split()
    assert [job_id] == h.engine.job_ids()["fnrelay-htex"] and queue == "fnrelay.q"
