"""Which submission errors the batch engine retries: the schedulers' own messages."""

from __future__ import annotations

import shutil

import pytest

from fnrelay_endpoint.engines.batch.schedulers.base import SchedulerError
from fnrelay_endpoint.engines.batch.schedulers.htcondor import HTCondorScheduler
from fnrelay_endpoint.engines.batch.schedulers.pbspro import PBSProScheduler
from fnrelay_endpoint.engines.batch.schedulers.sge import SGEScheduler
from fnrelay_endpoint.engines.batch.schedulers.slurm import SlurmScheduler


def refused(stderr: str, command: str) -> SchedulerError:
    return SchedulerError(f"{command} failed (exit 1): {stderr}", [command], 1, stderr)


@pytest.mark.parametrize("stderr", [
    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
    "sbatch: error: slurm_persist_conn_open_without_init: failed to open persistent connection",
    "sbatch: error: QOSMaxSubmitJobPerUserLimit",
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
    "(job submit limit, user's size and/or time limits)",
    "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
    "(connect failure)",
])
def test_slurm_transient_errors(stderr):
    assert SlurmScheduler().is_transient(refused(stderr, "sbatch"))


@pytest.mark.parametrize("stderr", [
    "sbatch: error: Batch job submission failed: Invalid partition name specified",
    "sbatch: error: Batch job submission failed: Invalid account or account/partition "
    "combination specified",
    "sbatch: unrecognized option '--bogus'",
])
def test_slurm_permanent_errors(stderr):
    assert not SlurmScheduler().is_transient(refused(stderr, "sbatch"))


@pytest.mark.parametrize("stderr, transient", [
    ("qsub: would exceed queue workq's per-user limit of jobs in 'Q' state", True),
    ("qsub: Maximum number of jobs already in queue", True),
    ("qsub: cannot connect to server pbs01 (errno=111)", True),
    ("qsub: Unknown queue", False),
    ("qsub: Job exceeds queue resource limits", False),
])
def test_pbs_errors(stderr, transient):
    assert PBSProScheduler().is_transient(refused(stderr, "qsub")) is transient


@pytest.mark.parametrize("stderr, transient", [
    ("Unable to run job: job rejected: only 1000 jobs are allowed per user "
     "(current job count: 1000)", True),
    ("Unable to run job: job rejected: Only 5000 jobs are allowed per cluster", True),
    ('error: unable to contact qmaster using port 6444 on host "sge01"', True),
    ('Unable to run job: Job was rejected because job requests unknown queue "gpu".', False),
])
def test_sge_errors(stderr, transient):
    assert SGEScheduler().is_transient(refused(stderr, "qsub")) is transient


@pytest.mark.parametrize("stderr, transient", [
    ("Number of submitted jobs would exceed MAX_JOBS_PER_OWNER", True),
    ("Number of submitted jobs would exceed MAX_JOBS_SUBMITTED", True),
    ("ERROR: Failed to connect to local queue manager", True),
    ("ERROR: on Line 3 of submit file: Submit file requests an unknown universe", False),
])
def test_htcondor_errors(stderr, transient):
    assert HTCondorScheduler().is_transient(refused(stderr, "condor_submit")) is transient


def test_a_hung_command_is_transient(tmp_path):
    """sbatch may hang while slurmctld is busy; the engine looks the job up by name first."""
    hang = tmp_path / "sbatch"
    hang.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 5\n")
    hang.chmod(0o755)
    scheduler = SlurmScheduler(timeout=0.2, env={"PATH": str(tmp_path)})
    with pytest.raises(SchedulerError) as caught:
        scheduler.submit(tmp_path / "job.sh", "fnrelay-x", tmp_path)
    assert scheduler.is_transient(caught.value)
