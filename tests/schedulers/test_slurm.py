"""The Slurm adapter against a real one-node Slurm cluster (fixture `slurm_cluster`)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from fnrelay_endpoint.engines.batch.schedulers.base import (
    JobState,
    SchedulerError,
    status_from_exit_file,
)
from fnrelay_endpoint.engines.batch.schedulers.slurm import SlurmScheduler
from support.slurm_jobs import wait_gate, wait_status, write_job

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture
def sched() -> SlurmScheduler:
    return SlurmScheduler(timeout=30)


def name() -> str:
    return f"fnrelay-{uuid.uuid4()}"


def terminal(s) -> bool:
    return s.terminal


def test_job_goes_queued_running_completed(sched, tmp_path: Path):
    script = write_job(tmp_path, wait_gate(tmp_path) + "; echo hello",
                       directives=("#SBATCH --hold",))
    job = sched.submit(script, name(), tmp_path)
    assert sched.status([job])[job].state is JobState.HELD  # released below, it runs

    sched.run(["scontrol", "release", job])
    wait_status(sched, job, lambda s: s.state is JobState.RUNNING)
    (tmp_path / "gate").touch()
    final = wait_status(sched, job, terminal)

    assert (final.state, final.exit_code) == (JobState.COMPLETED, 0)
    assert (tmp_path / "stdout").read_text().strip() == "hello"
    assert status_from_exit_file(tmp_path).state is JobState.COMPLETED


def test_failing_script_is_failed_with_its_exit_code(sched, tmp_path: Path):
    job = sched.submit(write_job(tmp_path, "echo oops >&2; exit 3"), name(), tmp_path)
    final = wait_status(sched, job, terminal)
    assert (final.state, final.native_state, final.exit_code) == (JobState.FAILED, "FAILED", 3)
    assert "exit status 3" in final.reason
    assert "oops" in (tmp_path / "stderr").read_text()


def test_cancel_running_and_queued_jobs_is_cancelled(sched, tmp_path: Path):
    running = sched.submit(write_job(tmp_path / "r", wait_gate(tmp_path / "r")), name(),
                           tmp_path)
    queued = sched.submit(write_job(tmp_path / "q", "true", ("#SBATCH --hold",)), name(),
                          tmp_path)
    wait_status(sched, running, lambda s: s.state is JobState.RUNNING)

    sched.cancel(running)
    sched.cancel(queued)

    for job in (running, queued):
        assert wait_status(sched, job, terminal).state is JobState.CANCELLED
    sched.cancel(running)  # cancelling a finished job again is not an error


def test_job_cancelled_behind_our_back_is_failed(sched, tmp_path: Path):
    job = sched.submit(write_job(tmp_path, wait_gate(tmp_path)), name(), tmp_path)
    wait_status(sched, job, lambda s: s.state is JobState.RUNNING)
    sched.run(["scancel", job])  # an administrator, not Client.cancel
    final = wait_status(sched, job, terminal)
    assert final.state is JobState.FAILED
    assert "CANCELLED" in final.reason


def test_find_by_name_finds_the_submitted_job(sched, tmp_path: Path):
    job_name = name()
    job = sched.submit(write_job(tmp_path, "true", ("#SBATCH --hold",)), job_name, tmp_path)
    try:
        assert sched.find_by_name(job_name) == job
        assert sched.find_by_name(name()) is None
    finally:
        sched.cancel(job)


def test_status_of_several_jobs_at_once(sched, tmp_path: Path):
    held = sched.submit(write_job(tmp_path / "h", "true", ("#SBATCH --hold",)), name(),
                        tmp_path)
    a = sched.submit(write_job(tmp_path / "a", wait_gate(tmp_path / "a")), name(), tmp_path)
    b = sched.submit(write_job(tmp_path / "b", wait_gate(tmp_path / "b")), name(), tmp_path)
    try:
        # CPUs=8 in slurm.conf: both gated jobs run at the same time on this small machine.
        for job in (a, b):
            wait_status(sched, job, lambda s: s.state is JobState.RUNNING)
        statuses = sched.status([held, a, b, "999999"])
        assert {k: v.state for k, v in statuses.items()} == {
            held: JobState.HELD, a: JobState.RUNNING, b: JobState.RUNNING,
            "999999": JobState.UNKNOWN}
    finally:
        for d in ("a", "b"):
            (tmp_path / d / "gate").touch()
        sched.cancel(held)


def test_purged_job_is_unknown_and_its_exit_status_file_tells_the_end(sched, tmp_path: Path):
    job = sched.submit(write_job(tmp_path, "exit 5"), name(), tmp_path)
    assert wait_status(sched, job, terminal).exit_code == 5
    # MinJobAge=2 in the test cluster: slurmctld soon forgets the job, and there is no sacct.
    assert wait_status(sched, job, lambda s: s.state is JobState.UNKNOWN, timeout=120)
    final = status_from_exit_file(tmp_path)
    assert (final.state, final.exit_code) == (JobState.FAILED, 5)


def test_refused_submission_raises_with_sbatch_message(sched, tmp_path: Path):
    script = write_job(tmp_path, "true", ("#SBATCH --partition=no-such-partition",))
    with pytest.raises(SchedulerError, match="(?i)invalid partition"):
        sched.submit(script, name(), tmp_path)


def test_unreachable_controller_is_an_error_not_unknown(slurm_cluster, tmp_path: Path):
    from support.slurm_cluster import free_port

    conf = re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={free_port()}",
                  slurm_cluster.conf.read_text())
    conf = re.sub(r"MessageTimeout=\d+", "MessageTimeout=1", conf)  # retries 18s otherwise
    (tmp_path / "slurm.conf").write_text(conf)
    sched = SlurmScheduler(timeout=60, env={**slurm_cluster.env,
                                             "SLURM_CONF": str(tmp_path / "slurm.conf")})
    with pytest.raises(SchedulerError, match="squeue"):
        sched.status(["1"])


def test_partition_choice_reaches_slurm(sched, slurm_cluster, tmp_path: Path):
    job = sched.submit(write_job(tmp_path, "true", ("#SBATCH --hold", "#SBATCH -p batch")),
                       name(), tmp_path)
    try:
        assert "Partition=batch" in slurm_cluster.run("scontrol", "show", "job", "-o", job)
    finally:
        sched.cancel(job)
