"""The parsl engine with Parsl's local provider: real interchange, real worker pool."""

from __future__ import annotations

import time

import pytest

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.engines.parsl.engine import ParslEngine


def double(x):
    return 2 * x


def fail():
    raise ValueError("boom")


def sleep_then(seconds, x):
    import time

    time.sleep(seconds)
    return x


def mpi_env():
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("FNRELAY_", "PARSL_MPI"))}


@pytest.mark.slow
def test_several_hundred_tasks_all_correct(parsl_engine):
    h = parsl_engine(provider="local", max_workers_per_node=4, init_blocks=1)
    ids = {h.submit(double, i): i for i in range(300)}
    results = h.wait(list(ids), timeout=150)
    assert {h.value(r) for r in results.values()} == {2 * i for i in range(300)}
    assert all(h.value(results[t]) == 2 * i for t, i in ids.items())
    one = next(iter(ids))
    assert h.states(one) == ["waiting-for-nodes", "running"]
    assert "started" in results[one].details  # the worker's own start time
    assert h.engine.job_ids()["fnrelay-htex"]  # one local block (a pid) served them


def test_user_exception_is_the_result_not_an_infrastructure_failure(parsl_engine):
    h = parsl_engine(provider="local", max_workers_per_node=1, init_blocks=1)
    [result] = h.wait([h.submit(fail)]).values()
    assert result.status == "failed"
    assert result.exception.type == "builtins.ValueError"
    assert "boom" in result.exception.message
    assert "infrastructure" not in result.details


def test_cancel_queued_task_never_runs_and_running_task_is_not_cancelled(parsl_engine):
    h = parsl_engine(provider="local", max_workers_per_node=1, init_blocks=1)
    first = h.submit(sleep_then, 3, "first")
    queued = h.submit(double, 21)
    assert h.wait_for(lambda: h.running(first), 60)
    assert h.engine.cancel(queued) is True
    assert h.engine.cancel(first) is False  # running in a Parsl worker: best effort says no
    results = h.wait([first, queued])
    assert results[queued].status == "cancelled"
    assert h.value(results[first]) == "first"
    time.sleep(1)  # the worker now reaches the cancelled task: it must not run
    assert "running" not in h.states(queued)


def test_a_lone_call_runs_before_another_submitters_queued_flood(parsl_engine):
    """A shared endpoint's users take turns on Parsl too, though Parsl holds the backlog."""
    h = parsl_engine(provider="local", max_workers_per_node=1, init_blocks=1)
    flood = [h.submit(sleep_then, 0.1, i, submitter="mallory") for i in range(30)]
    assert h.wait_for(lambda: h.running(flood[0]), 60)
    lone = h.submit(double, 21, submitter="bob")
    assert h.value(h.wait([lone], timeout=60)[lone]) == 42
    done_before = sum(t in h.results for t in flood)
    assert done_before <= 5, f"the lone call waited for {done_before} of the flood's 30 tasks"
    assert [h.value(r) for r in h.wait(flood, timeout=60).values()] == list(range(30))


def test_refused_resource_specification_fails_the_task(parsl_engine):
    h = parsl_engine(provider="local", max_workers_per_node=1, mpi={"nodes_per_block": 1})
    too_big = h.submit(double, 1, resource_specification={"num_nodes": 2, "num_ranks": 2})
    free_text = h.submit(double, 1, resource_specification={"launcher_options": "-x"})
    results = h.wait([too_big, free_text], timeout=30)
    assert "do not fit a pilot block" in results[too_big].exception.message
    assert "free text" in results[free_text].exception.message
    # the same exception type as the batch and local engines' refusals
    assert {results[t].exception.type for t in (too_big, free_text)} == {
        "fnrelay_endpoint.ResourceSpecificationError"}


def test_mpi_task_gets_an_openmpi_prefix_not_parsl_mpich_flags(parsl_engine):
    h = parsl_engine(provider="local", max_workers_per_node=1,
                     mpi={"launcher": "openmpi", "launcher_settings": {"oversubscribe": True}})
    [result] = h.wait([h.submit(mpi_env, resource_specification={"num_ranks": 2})],
                      timeout=90).values()
    env = h.value(result)
    assert env["FNRELAY_NUM_RANKS"] == "2"
    prefix = env["FNRELAY_MPI_PREFIX"]
    assert env["PARSL_MPI_PREFIX"] == prefix  # what Globus Compute's MPIFunction reads
    assert prefix.startswith("mpiexec -n 2 --map-by ppr:2:node")
    assert "-ppn" not in prefix and "-hosts" not in prefix


@pytest.mark.parametrize("config, message", [
    ({"provider": "cobalt"}, "engine.provider"),
    ({"max_blocks": 0}, "engine.max_blocks"),
    ({"heartbeat_period": 10, "heartbeat_threshold": 5}, "engine.heartbeat_threshold"),
    ({"partition": "a;b"}, "engine.partition"),
    ({"nodes": 3}, "engine.nodes"),
    ({"mpi": {"launcher": "mvapich"}}, "engine.mpi.launcher"),
    ({"container": {"type": "apptainer"}}, "engine.container"),
])
def test_bad_config_is_refused_with_the_key_named(tmp_path, config, message):
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.")):
        ParslEngine({"type": "parsl", **config}, tmp_path, print, print)
