"""Which submission errors the batch engine retries: the schedulers' own messages."""

from __future__ import annotations

import shutil

import pytest

from fnrelay_endpoint.engines.batch.schedulers.base import SchedulerError
from fnrelay_endpoint.engines.batch.schedulers.flux import FluxScheduler
from fnrelay_endpoint.engines.batch.schedulers.htcondor import HTCondorScheduler
from fnrelay_endpoint.engines.batch.schedulers.lsf import LSFScheduler
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


# IBM Spectrum LSF 10.1.0: "About job states" (MAX_PEND_JOBS, SUB_TRY_INTERVAL, LSB_NTRIES)
# and the LIM/mbatchd messages bsub prints while the daemons are down or restarting.
@pytest.mark.parametrize("stderr, transient", [
    ("Batch system not responding ... still trying", True),
    ("LSF is down. Please wait ...", True),
    ("ls_getclustername(): LIM is down; try later", True),
    ("Cannot locate master LIM now, try later", True),
    ("Timeout in contacting mbatchd", True),
    ("User <alice>: Pending job threshold reached. Retrying in 60 seconds...", True),
    ("Group <resUsers>: Pending job threshold reached.", True),
    ("User <alice>: Pending job slot threshold reached.", True),
    ("Bad queue name. Job not submitted.", False),
    ("Too many processors requested. Job not submitted.", False),
    ("User permission denied. Job not submitted.", False),
])
def test_lsf_errors(stderr, transient):
    assert LSFScheduler().is_transient(refused(stderr, "bsub")) is transient


# flux-core 0.6x (flux-batch(1), "Flux URIs" in the Flux documentation) and flux-accounting's
# per-user limits ("flux-job: user has max active jobs").
@pytest.mark.parametrize("stderr, transient", [
    ("flux-batch: ERROR: Unable to connect to Flux: broker socket /run/flux/local was not "
     "found", True),
    ("flux-job: ERROR: [Errno 111] Connection refused", True),
    ("flux-batch: ERROR: [Errno 104] Connection reset by peer", True),
    ("flux-job: user has max active jobs", True),
    ("flux-batch: ERROR: unsatisfiable request", False),
    ("flux-batch: ERROR: duration: Invalid argument", False),
    ("flux-batch: ERROR: script is not a file: No such file or directory", False),
])
def test_flux_errors(stderr, transient):
    assert FluxScheduler().is_transient(refused(stderr, "flux batch")) is transient


def test_bsub_tries_once_and_a_hung_bsub_is_transient(tmp_path):
    """Left to itself, bsub retries a pending-job threshold for ever; the engine's back-off
    does that instead, so bsub runs with LSB_NTRIES=1."""
    bsub = tmp_path / "bsub"
    bsub.write_text(f"#!/bin/sh\necho \"$LSB_NTRIES\" > {tmp_path / 'ntries'}\n"
                    f"exec {shutil.which('sleep')} 5\n")
    bsub.chmod(0o755)
    (tmp_path / "job.sh").write_text("#!/bin/bash\n")
    scheduler = LSFScheduler(timeout=0.5, env={"PATH": str(tmp_path)})
    with pytest.raises(SchedulerError) as caught:
        scheduler.submit(tmp_path / "job.sh", "fnrelay-x", tmp_path)
    assert scheduler.is_transient(caught.value)
    assert (tmp_path / "ntries").read_text().strip() == "1"


def test_a_hung_command_is_transient(tmp_path):
    """sbatch may hang while slurmctld is busy; the engine looks the job up by name first."""
    hang = tmp_path / "sbatch"
    hang.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 5\n")
    hang.chmod(0o755)
    scheduler = SlurmScheduler(timeout=0.2, env={"PATH": str(tmp_path)})
    with pytest.raises(SchedulerError) as caught:
        scheduler.submit(tmp_path / "job.sh", "fnrelay-x", tmp_path)
    assert scheduler.is_transient(caught.value)
