"""The parsl engine with Parsl's SlurmProvider on the real one-node Slurm test cluster."""

from __future__ import annotations

import subprocess
import time

import pytest

from fnrelay import MPIFunction

pytestmark = pytest.mark.slow


def square(x):
    return x * x


def sleep_then(seconds, x):
    import time

    time.sleep(seconds)
    return x


def squeue(job_ids: list[str]) -> list[str]:
    """Those of `job_ids` that Slurm still lists."""
    if not job_ids:
        return []
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=30)
    return [j for j in out.stdout.split() if j in job_ids]


def test_200_tasks_through_a_few_pilot_jobs(slurm_engine):
    h = slurm_engine
    ids = {h.submit(square, i): i for i in range(200)}
    results = h.wait(list(ids), timeout=150)
    assert all(h.value(results[t]) == i * i for t, i in ids.items())
    jobs = h.engine.job_ids()["fnrelay-htex"]
    assert 1 <= len(jobs) <= 2  # max_blocks pilots, never a job per task
    assert all(j.isdigit() for j in jobs)  # Slurm job ids, from sbatch


def test_mpi_task_with_two_ranks_uses_srun(slurm_engine):
    h = slurm_engine
    fn = MPIFunction("bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS'")
    [result] = h.wait([h.submit(fn, resource_specification={"num_ranks": 2})],
                      timeout=120).values()
    out = h.value(result)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split("\n")[:2]) == ["rank=0 of 2", "rank=1 of 2"]
    assert h.engine.job_ids()["fnrelay-mpi"]  # its own SimpleLauncher pilot block


def test_scancel_of_the_pilot_fails_inflight_tasks_as_worker_lost(slurm_engine, slurm_cluster):
    h = slurm_engine
    ids = [h.submit(sleep_then, 60, i) for i in range(2)]
    assert h.wait_for(lambda: all(h.running(t) for t in ids), 90)
    alive = squeue(h.engine.job_ids()["fnrelay-htex"])
    assert alive
    subprocess.run(["scancel", *alive], check=True, timeout=30)
    results = h.wait(ids, timeout=60)  # heartbeat_threshold is 4 s: never hung
    for r in results.values():
        assert r.status == "failed"
        assert r.details["infrastructure"] is True
        assert "worker lost" in r.exception.message
    # the engine keeps working: a new pilot block takes the next task (a task handed to a
    # second cancelled pilot before its heartbeats expired may fail the same way first)
    for _ in range(3):
        [again] = h.wait([h.submit(square, 7)], timeout=120).values()
        if again.status == "success":
            break
        assert again.details["infrastructure"] is True, again.exception
    assert h.value(again) == 49


def test_shutdown_leaves_no_job_in_squeue(slurm_engine):
    """Last in this module: shuts the module's engine down (its teardown then does nothing)."""
    h = slurm_engine
    [result] = h.wait([h.submit(square, 3)], timeout=120).values()
    assert h.value(result) == 9
    jobs = [j for ids in h.engine.job_ids().values() for j in ids]
    assert squeue(jobs)
    h.engine.shutdown()
    # scancel is asynchronous: wait (not a timed assertion) until Slurm forgets the jobs
    deadline = time.monotonic() + 60
    while squeue(jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert squeue(jobs) == []


def test_a_pilot_slurmctld_has_forgotten_counts_as_ended(slurm_cluster, tmp_path):
    """Once slurmctld forgets a pilot's job (MinJobAge after it ends: 2 s on this cluster, 300 s
    by default), `squeue --job ID` exits 1 with "Invalid job id specified". Parsl's
    SlurmProvider took that for a failed poll and kept the block running for ever, so its
    strategy never replaced a scancelled pilot and the tasks hung (Parsl issue #1588). The
    engine's provider must report the block ended."""
    from fnrelay_endpoint.engines.parsl.settings import ParslSettings, build_config

    settings = ParslSettings.from_dict({"type": "parsl", "provider": "slurm", "exclusive": False,
                                        "walltime": "00:05:00", "init_blocks": 0})
    provider = build_config(settings, tmp_path).executors[0].provider
    assert provider._cmd.startswith("squeue")  # this cluster has no accounting, so no sacct
    provider.script_dir = str(tmp_path)
    job = provider.submit("sleep 300", 1, "forgotten-pilot")
    try:
        [before] = provider.status([job])
        assert not before.terminal, before
    finally:  # never leave the job to the next tests
        subprocess.run(["scancel", job], check=True, timeout=30)
    deadline = time.monotonic() + 180  # slurmctld purges old jobs on its own schedule
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                         timeout=30).returncode == 0:
        assert time.monotonic() < deadline, "slurmctld kept the cancelled job"
        time.sleep(1)
    [after] = provider.status([job])
    assert after.terminal, f"a job Slurm no longer knows is still {after.state.name}"
