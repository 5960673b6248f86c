"""docs/hpc.md's example, end to end: SDK -> broker -> a batch endpoint -> sbatch -> srun."""

from __future__ import annotations

import os

from fnrelay import Executor, MPIFunction
from support.waiting import wait_for

SLURM_ENGINE = {"type": "batch", "scheduler": "slurm", "launcher": "srun", "poll_interval": 0.5}


def test_mpi_hostname_on_two_ranks_through_a_slurm_endpoint(slurm_cluster, make_endpoint,
                                                             client):
    ep = make_endpoint("slurm", engine=SLURM_ENGINE)
    with Executor(endpoint_id=ep.endpoint_id, client=client,
                  resource_specification={"num_ranks": 2}) as ex:
        future = ex.submit(MPIFunction("hostname"))
        out = future.result(timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [os.uname().nodename] * 2
    history = client.task_record(future.task_id)["history"]
    queued = [h for h in history if h["status"] == "waiting-for-nodes"]
    assert queued and "slurm job" in queued[0]["detail"]  # the job id is in the history


def print_and_add(a, b):
    import sys

    print(f"adding {a} and {b}")
    print("nothing wrong", file=sys.stderr)
    return a + b


def test_what_a_slurm_task_printed_comes_back_with_its_result(slurm_cluster, make_endpoint,
                                                              client):
    ep = make_endpoint("slurm-print", engine=SLURM_ENGINE)
    task_id = client.run(2, 3, endpoint_id=ep.endpoint_id,
                         function_id=client.register_function(print_and_add))
    record = wait_for(lambda: (r := client.task_record(task_id)) and not r["pending"] and r,
                      "the slurm task", 180)
    assert client.get_result(task_id) == 5
    details = record["details"]
    assert details["stdout_tail"].splitlines()[-1] == "adding 2 and 3"
    assert details["stderr_tail"].splitlines()[-1] == "nothing wrong"
