"""The batch engine on the real one-node Slurm: every task its own sbatch job."""

from __future__ import annotations

import os
import re
import time

import pytest

from fnrelay import MPIFunction, ShellFunction, serialize
from fnrelay.wire import TaskState
from fnrelay_endpoint.engines.batch.sandbox import Sandbox

WAIT = 90.0  # upper bound for the cluster to act, not a timing assertion


def add(a, b):
    import os

    return a + b, os.environ.get("SLURM_JOB_ID"), os.environ.get("FNRELAY_TASK_SANDBOX")


def crash(code):
    import os
    import sys

    sys.stderr.write("fnrelay-test: the job is about to die\n")
    sys.stderr.flush()
    os._exit(code)


def sleep_then(path, seconds, value):
    import pathlib
    import time

    pathlib.Path(path).write_text("started")
    time.sleep(seconds)
    return value


def value(result):
    assert result.status == TaskState.SUCCESS.value, result.exception
    return serialize.deserialize(result.result)


def scontrol(slurm_cluster, job_id: str) -> dict[str, str]:
    out = slurm_cluster.run("scontrol", "show", "job", job_id)
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_id_of(update) -> str:
    return re.search(r"job (\d+)", update.detail).group(1)


def test_python_function_runs_in_its_own_sbatch_job(make_batch_engine, make_task, tmp_path):
    engine, rec = make_batch_engine()
    task = make_task(add, 2, b=40)
    engine.submit(task)
    queued = rec.status(task.task_id, TaskState.WAITING_FOR_NODES.value)
    total, slurm_job_id, sandbox = value(rec.result(task.task_id))
    assert total == 42
    assert job_id_of(queued) == slurm_job_id  # the job id is in the task's history
    assert rec.results[task.task_id][0].details["batch_job_id"] == slurm_job_id
    assert sandbox == str(Sandbox.of(tmp_path / "endpoint", task.task_id).path)
    assert len(rec.results[task.task_id]) == 1


def test_mpi_function_runs_two_ranks_through_srun(make_batch_engine, make_task):
    engine, rec = make_batch_engine()
    hostname = make_task(MPIFunction("hostname"), resource_specification={"num_ranks": 2})
    ranks = make_task(MPIFunction("bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS'"),
                      resource_specification={"num_ranks": 2})
    # Written for Globus Compute: its MPIFunction runs `$PARSL_MPI_PREFIX cmd`, with its
    # one-node resource specification.
    theirs = make_task(ShellFunction("$PARSL_MPI_PREFIX bash -c 'echo rank=$SLURM_PROCID'"),
                       resource_specification={"num_nodes": 1, "ranks_per_node": 2})
    engine.submit(hostname)
    engine.submit(ranks)
    engine.submit(theirs)
    out = value(rec.result(hostname.task_id))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [os.uname().nodename] * 2
    out = value(rec.result(ranks.task_id))
    assert sorted(out.stdout.splitlines()) == ["rank=0 of 2", "rank=1 of 2"]
    out = value(rec.result(theirs.task_id))
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == ["rank=0", "rank=1"]


def test_mpi_function_with_the_openmpi_launcher(make_batch_engine, make_task):
    engine, rec = make_batch_engine(
        launcher={"type": "openmpi", "oversubscribe": True, "allow_run_as_root": True})
    task = make_task(MPIFunction("bash -c 'echo rank=$OMPI_COMM_WORLD_RANK'"),
                     resource_specification={"num_ranks": 2})
    engine.submit(task)
    out = value(rec.result(task.task_id))
    assert out.returncode == 0, out.stderr
    # mpiexec may interleave the ranks' forwarded lines: compare the characters.
    assert sorted("".join(out.stdout.split())) == sorted("rank=0rank=1")


def test_shell_function_stdout_and_returncode(make_batch_engine, make_task):
    engine, rec = make_batch_engine()
    task = make_task(ShellFunction("echo out-{word}; echo err-line >&2; exit 3"), word="a b")
    engine.submit(task)
    out = value(rec.result(task.task_id))
    assert (out.returncode, out.stdout, out.stderr) == (3, "out-a b\n", "err-line\n")


def test_nonzero_job_exit_fails_with_the_stderr_tail(make_batch_engine, make_task):
    engine, rec = make_batch_engine()
    task = make_task(crash, 7)
    engine.submit(task)
    result = rec.result(task.task_id)
    assert result.status == TaskState.FAILED.value
    assert "exit status 7" in result.exception.message
    assert "fnrelay-test: the job is about to die" in result.exception.message
    assert "the job is about to die" in result.details["stderr_tail"]
    assert not result.details.get("infrastructure")


@pytest.mark.parametrize("spec, key", [
    ({"partition": "debug\n#SBATCH --wrap=id"}, "partition"),
    ({"partition": "debug;id"}, "partition"),
    ({"account": "$(id)"}, "account"),
    ({"walltime": "1:00; id"}, "walltime"),
    ({"scheduler_options": ["#SBATCH --wrap=id"]}, "scheduler_options"),
    ({"pre_exec": ["touch /tmp/pwned"]}, "pre_exec"),
    ({"container": {"type": "apptainer", "image": "x.sif", "options": "--bind /:/host"}},
     "container.options"),
])
def test_refused_values_fail_before_anything_is_submitted(make_batch_engine, make_task, squeue,
                                                          tmp_path, spec, key):
    engine, rec = make_batch_engine()
    task = make_task(add, 1, 2, resource_specification=spec)
    engine.submit(task)
    result = rec.result(task.task_id)
    assert result.status == TaskState.FAILED.value
    assert repr(key) in result.exception.message
    assert squeue(f"fnrelay-{task.task_id}") == []
    assert Sandbox.of(tmp_path / "endpoint", task.task_id).job_id() is None
    assert rec.statuses_of(task.task_id) == []


def test_overrides_show_in_scontrol_and_a_pending_job_is_cancelled(
        make_batch_engine, make_task, slurm_cluster, squeue):
    engine, rec = make_batch_engine(defaults={"partition": "debug", "walltime": 3600},
                                    allowed_free_text=["scheduler_options"])
    task = make_task(add, 1, 2, resource_specification={
        "partition": "batch", "walltime": "00:05:00",
        "scheduler_options": ["#SBATCH --begin=now+1hour"]})
    engine.submit(task)
    job_id = job_id_of(rec.status(task.task_id, TaskState.WAITING_FOR_NODES.value))
    job = scontrol(slurm_cluster, job_id)
    assert (job["Partition"], job["TimeLimit"], job["JobState"]) == ("batch", "00:05:00",
                                                                      "PENDING")
    assert engine.cancel(task.task_id)
    result = rec.result(task.task_id)
    assert result.status == TaskState.CANCELLED.value
    assert squeue(f"fnrelay-{task.task_id}") in ([], [job_id])
    if squeue(f"fnrelay-{task.task_id}"):
        assert scontrol(slurm_cluster, job_id)["JobState"] == "CANCELLED"
    assert rec.statuses_of(task.task_id) == [TaskState.WAITING_FOR_NODES.value]


def test_cancel_a_running_job(make_batch_engine, make_task, slurm_cluster, tmp_path):
    engine, rec = make_batch_engine()
    started = tmp_path / "started"
    task = make_task(sleep_then, str(started), 300, "never")
    engine.submit(task)
    running = rec.status(task.task_id, TaskState.RUNNING.value)
    job_id = job_id_of(running)
    assert engine.cancel(task.task_id)
    result = rec.result(task.task_id)
    assert result.status == TaskState.CANCELLED.value
    assert job_id in result.details["detail"]
    # The job leaves the node: slurmctld ends it CANCELLED (or forgets it), never COMPLETED.
    def state() -> list[str]:
        return slurm_cluster.run("squeue", "-h", "--states=all", f"--jobs={job_id}", "-o",
                                 "%T", check=False).split()

    deadline = time.monotonic() + WAIT
    while (now := state()) not in ([], ["CANCELLED"]):
        assert now in (["RUNNING"], ["COMPLETING"]), now
        assert time.monotonic() < deadline, "the cancelled job did not end"
        time.sleep(0.2)
    assert not Sandbox.of(tmp_path / "endpoint", task.task_id).result_file.exists()
    assert not engine.cancel(task.task_id)  # settled: a second cancel is not "known"


def test_restarted_engine_reattaches_and_never_submits_twice(make_batch_engine, make_task,
                                                             squeue, tmp_path):
    workdir = tmp_path / "ep"
    first, rec1 = make_batch_engine(workdir)
    task = make_task(sleep_then, str(tmp_path / "started"), 3, "done")
    first.submit(task)
    job_id = job_id_of(rec1.status(task.task_id, TaskState.WAITING_FOR_NODES.value))
    first.shutdown()  # the endpoint dies with its job submitted and no result reported
    assert task.task_id not in rec1.results

    second, rec2 = make_batch_engine(workdir)
    second.submit(task)  # the agent re-runs its journal: the job is watched, not resubmitted
    assert value(rec2.result(task.task_id)) == "done"
    assert rec2.results[task.task_id][0].details["batch_job_id"] == job_id
    assert squeue(f"fnrelay-{task.task_id}") in ([], [job_id])

    third, rec3 = make_batch_engine(workdir)  # reported but maybe never journaled: re-report
    third.submit(task)
    assert value(rec3.result(task.task_id)) == "done"
    assert squeue(f"fnrelay-{task.task_id}") in ([], [job_id])


def test_crash_before_the_job_id_was_journaled_finds_the_job_by_name(
        make_batch_engine, make_task, squeue, tmp_path):
    workdir = tmp_path / "ep"
    first, rec1 = make_batch_engine(workdir)
    task = make_task(sleep_then, str(tmp_path / "started"), 3, "found")
    first.submit(task)
    job_id = job_id_of(rec1.status(task.task_id, TaskState.WAITING_FOR_NODES.value))
    first.shutdown()
    Sandbox.of(workdir, task.task_id).job_id_file.unlink()  # as if sbatch ran, the write not

    second, rec2 = make_batch_engine(workdir)
    second.submit(task)
    assert value(rec2.result(task.task_id)) == "found"
    assert rec2.results[task.task_id][0].details["batch_job_id"] == job_id
    assert squeue(f"fnrelay-{task.task_id}") in ([], [job_id])


@pytest.mark.slow
def test_walltime_overrun_fails_with_timeout(make_batch_engine, make_task):
    engine, rec = make_batch_engine()
    task = make_task(ShellFunction("echo before-the-limit; sleep 600"),
                     resource_specification={"walltime": 60})
    engine.submit(task)
    result = rec.result(task.task_id, timeout=240)
    assert result.status == TaskState.FAILED.value
    assert "TIMEOUT" in result.exception.message
    assert result.details["scheduler_state"] == "TIMEOUT"
    assert not result.details.get("infrastructure")
