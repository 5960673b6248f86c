"""Code written for globus_compute_sdk's Executor, ShellFunction and MPIFunction, with only the
import changed, against the real stack (broker, RabbitMQ, local endpoints): what a Globus
Compute user sees.

Fixtures (tests/conftest.py): ``client`` (alice), ``endpoint_id`` (a running local endpoint of
alice's), ``make_endpoint(name)``.
"""

from __future__ import annotations

import os

import pytest

from fnrelay import Executor, MPIFunction, ShellFunction, ShellResult
from fnrelay.errors import MPILaunchError, TaskExecutionFailed

WAIT = 120.0  # upper bound for anything to happen; a bound, not a timing assertion
RANK = "bash -c 'echo rank=$OMPI_COMM_WORLD_RANK'"  # the inner bash expands it, per rank


def square(x: int) -> int:
    return x * x


def test_an_executor_made_without_an_endpoint_runs_once_one_is_set(client, endpoint_id):
    with Executor(client=client) as ex:
        with pytest.raises(ValueError, match="no endpoint_id set"):
            ex.submit(square, 2)
        ex.endpoint_id = endpoint_id
        assert ex.submit(square, 7).result(timeout=WAIT) == 49


def test_register_function_then_reload_the_group_from_a_new_executor(client, endpoint_id):
    ex = Executor(endpoint_id, client=client)
    function_id = ex.register_function(square, description="squares")
    futures = [ex.submit(square, i) for i in range(3)]
    futures.append(ex.submit_to_registered_function(function_id, args=(5,)))
    assert [f.result(timeout=WAIT) for f in futures] == [0, 1, 4, 25]
    group = ex.task_group_id
    ex.shutdown()

    again = Executor(client=client)  # a new session: only the group's id was kept
    try:
        reloaded = list(again.reload_tasks(task_group_id=group))
        assert [f.task_id for f in reloaded] == [f.task_id for f in futures]
        assert all(f.done() for f in reloaded)
        assert [f.result() for f in reloaded] == [0, 1, 4, 25]
    finally:
        again.shutdown()


def test_shell_functions_as_globus_compute_runs_them(client, endpoint_id):
    with Executor(endpoint_id, client=client) as ex:
        ls = ex.submit(ShellFunction("ls {flags} /"), flags="-d -a").result(timeout=WAIT)
        failed = ex.submit(ShellFunction("echo oops >&2; exit 3", name="failing",
                                         return_dict=True)).result(timeout=WAIT)
        quoted = ex.submit(ShellFunction("echo {v}", quote_values=True),
                           v="a; echo injected").result(timeout=WAIT)
        late = ex.submit(ShellFunction("echo started; sleep 60", walltime=0.5)).result(WAIT)
    assert isinstance(ls, ShellResult)
    assert (ls.cmd, ls.stdout, ls.returncode, ls.exception_name) == ("ls -d -a /", "/\n", 0, None)
    assert str(ls) == "exit code: 0\n   stdout:\n/"
    assert failed == {"cmd": "echo oops >&2; exit 3", "stdout": "", "stderr": "oops\n",
                      "returncode": 3, "exception_name": "subprocess.CalledProcessError"}
    assert quoted.stdout == "a; echo injected\n"
    assert (late.returncode, late.exception_name) == (124, "subprocess.TimeoutExpired")
    assert late.stdout == "started\n"


def test_mpi_functions_with_globus_computes_resource_specification(client, make_endpoint):
    # The suite runs as root: the local engine lets OpenMPI start ranks as root itself.
    ep = make_endpoint("gc-mpi")
    with Executor(ep.endpoint_id, client=client) as ex:
        ex.resource_specification = {"num_nodes": 1, "ranks_per_node": 2}  # GC's one-node form
        ours = ex.submit(MPIFunction(RANK)).result(timeout=WAIT)
        # A command written for Globus Compute's MPIFunction, which runs `$PARSL_MPI_PREFIX cmd`
        theirs = ex.submit(ShellFunction(f"$PARSL_MPI_PREFIX {RANK}")).result(timeout=WAIT)
        ex.resource_specification = {"num_nodes": 2, "ranks_per_node": 2}  # GC's example
        too_wide = ex.submit(MPIFunction(RANK)).exception(timeout=WAIT)
        # More ranks than cores: OpenMPI starts none. Raised, with its words, not a blank result.
        ex.resource_specification = {"num_ranks": (os.cpu_count() or 1) + 1}
        refused = ex.submit(MPIFunction(RANK)).exception(timeout=WAIT)
    for result in (ours, theirs):
        assert result.returncode == 0, result.stderr
        assert sorted(result.stdout.split()) == ["rank=0", "rank=1"]
    assert ours.cmd == f"mpiexec -n 2 {RANK}"
    assert too_wide is not None
    assert "the local engine has one node (got 2)" in str(too_wide)
    assert isinstance(refused, MPILaunchError) and isinstance(refused, TaskExecutionFailed)
    assert "not enough slots" in str(refused) and "--oversubscribe" in str(refused)



def test_executor_registers_source_code_and_reports_hardware(client, endpoint_id):
    """GC's `Executor.register_source_code` and `get_worker_hardware_details`."""
    source = "def double(x):\n    return 2 * x\n"
    with Executor(endpoint_id, client=client) as ex:
        function_id = ex.register_source_code(source, "double")
        doubled = ex.submit_to_registered_function(function_id, args=(21,))
        report = ex.get_worker_hardware_details()
        assert doubled.result(timeout=WAIT) == 42
    assert "== host ==" in report


def test_tasks_write_relative_paths_in_the_endpoints_working_dir(client, make_endpoint,
                                                                 tmp_path, monkeypatch):
    """As Globus Compute's engines do: a task starts in `tasks_working_dir` under the
    endpoint's directory. It used to start wherever the endpoint was started, which then
    filled with files (GC's ShellFunction leaves <task>.stdout/.stderr for every call)."""
    started_in = tmp_path / "started-in"
    started_in.mkdir()
    monkeypatch.chdir(started_in)
    ep = make_endpoint("gc-cwd")
    with Executor(ep.endpoint_id, client=client) as ex:
        future = ex.submit(ShellFunction("echo hi > note.txt; pwd; echo $GC_TASK_UUID",
                                         stdout="job.stdout"))
        result = future.result(timeout=WAIT)
    working = ep.dir / "tasks_working_dir"
    assert result.stdout.split() == [str(working), future.task_id]
    assert sorted(p.name for p in working.iterdir()) == ["job.stdout", "note.txt"]
    assert list(started_in.iterdir()) == []
