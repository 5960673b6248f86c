"""LSF, Flux and HTCondor: the formats fnrelay renders and parses, and a run on stand-ins.

None of the three can run here. The data files follow the tools' documentation:
- data/lsf/: IBM Spectrum LSF 10.1.0, "bjobs -json" and "bjobs -o" (field names jobid, stat,
  exit_code, exit_reason, pend_reason, job_name; a record with ERROR for an unknown id) and
  "bsub" ("Job <id> is submitted to queue <name>."); job states from "bjobs: job states",
  TERM_RUNLIMIT from "Termination reasons" (LSF 10.1.0 documentation).
- data/flux/: flux-core 0.68 flux-jobs(1), OUTPUT FORMAT (`-o` with id.f58, state, result,
  returncode, exception.type, exception.note, name; `-n` no header) and JOB STATUS (states
  DEPEND/PRIORITY/SCHED/RUN/CLEANUP/INACTIVE, results COMPLETED/FAILED/CANCELED/TIMEOUT).
- data/htcondor/: HTCondor 23.x manual, condor_submit(1) `-terse` ("first - last" job ids),
  condor_q(1)/condor_history(1) `-af:jt` (tab-separated, job id first, `undefined` for a
  missing attribute) and "Job ClassAd Attributes" (JobStatus 1..7, ExitCode, ExitBySignal,
  ExitSignal, HoldReason, JobBatchName).
The stand-ins (support/standin_schedulers.py) record their arguments, run the job script for
real and answer in those formats.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from batch.conftest import Recorder, make_task

from fnrelay import ShellFunction, serialize
from fnrelay.wire import TaskState
from fnrelay_endpoint.engines.batch.engine import BatchEngine
from fnrelay_endpoint.engines.batch.schedulers import flux, htcondor, lsf
from fnrelay_endpoint.engines.batch.schedulers.base import JobState
from fnrelay_endpoint.engines.batch.templating import batch_context, render_batch_script
from fnrelay_endpoint.engines.resources import (
    ResourceSpecification,
    ResourceSpecificationError,
)
from support import standin_schedulers

DATA = Path(__file__).parent / "data"


# --- parsing ------------------------------------------------------------------------------------
def test_lsf_bsub_and_bjobs_json():
    assert lsf.parse_bsub((DATA / "lsf" / "bsub.txt").read_text()) == "4101"
    records = lsf.parse_bjobs_json((DATA / "lsf" / "bjobs.json").read_text())
    assert "4199" not in records  # the ERROR record of an unknown id
    states = {i: lsf.map_record(r) for i, r in records.items()}
    assert states["4101"].state is JobState.QUEUED
    assert "waiting for scheduling" in states["4101"].reason
    assert states["4102"].state is JobState.RUNNING
    assert states["4103"].state is JobState.COMPLETED
    assert (states["4104"].state, states["4104"].exit_code) == (JobState.FAILED, 3)
    assert states["4105"].state is JobState.FAILED
    assert "walltime exceeded" in states["4105"].reason



def test_lsf_a_job_suspended_while_pending_is_held_with_its_reason():
    """PSUSP never starts without bresume: the engine fails it with LSF's reason."""
    status = lsf.map_record({"JOBID": "4106", "STAT": "PSUSP",
                             "PEND_REASON": "The job was suspended by the user while pending;"})
    assert status.state is JobState.HELD
    assert "suspended by the user" in status.reason


def test_flux_jobs_output():
    jobs = flux.parse_flux_jobs((DATA / "flux" / "jobs.txt").read_text())
    by_name = {j.name: flux.map_job(j) for j in jobs.values()}
    assert by_name["fnrelay-a"].state is JobState.QUEUED
    assert by_name["fnrelay-b"].state is JobState.RUNNING
    assert by_name["fnrelay-c"].state is JobState.COMPLETED
    assert (by_name["fnrelay-d"].state, by_name["fnrelay-d"].exit_code) == (JobState.FAILED, 3)
    assert "exited with exit code 3" in by_name["fnrelay-d"].reason
    assert "walltime" in by_name["fnrelay-e"].reason
    assert by_name["fnrelay-f"].state is JobState.FAILED  # cancelled, but not by fnrelay
    job = next(j for j in jobs.values() if j.name == "fnrelay-f")
    assert flux.map_job(job, cancelled_here=True).state is JobState.CANCELLED
    assert flux.canonical("ƒ2kToWJjP") == flux.canonical("f2kToWJjP")


def test_flux_a_job_of_urgency_0_is_held_with_a_reason():
    """`flux job urgency ID hold` leaves a job pending for ever (flux-job(1): hold is 0)."""
    jobs = flux.parse_flux_jobs((DATA / "flux" / "jobs.txt").read_text())
    by_name = {j.name: j for j in jobs.values()}
    for name in ("fnrelay-held", "fnrelay-held-waiting"):
        status = flux.map_job(by_name[name])
        assert status.state is JobState.HELD, name
        assert "urgency 0 (flux job urgency ID hold)" in status.reason
    assert flux.map_job(by_name["fnrelay-expedited"]).state is JobState.QUEUED
    assert flux.map_job(by_name["fnrelay-held"], cancelled_here=True).state is JobState.QUEUED
    assert "{urgency}" in flux.JOBS_FORMAT  # asked for, so that holds are seen


def test_htcondor_terse_and_af_output():
    assert htcondor.parse_terse((DATA / "htcondor" / "submit-terse.txt").read_text()) \
        == "4101.0"
    jobs = htcondor.parse_af((DATA / "htcondor" / "condor_q.txt").read_text())
    jobs.update(htcondor.parse_af((DATA / "htcondor" / "condor_history.txt").read_text()))
    states = {i: htcondor.map_job(j) for i, j in jobs.items()}
    assert states["4101.0"].state is JobState.QUEUED
    assert states["4102.0"].state is JobState.RUNNING
    assert states["4103.0"].state is JobState.FAILED
    assert "Failed to initialize user log" in states["4103.0"].reason
    assert states["4104.0"].state is JobState.COMPLETED
    assert (states["4105.0"].state, states["4105.0"].exit_code) == (JobState.FAILED, 3)
    assert (states["4106.0"].exit_code, states["4106.0"].reason) == (137, "killed by signal 9")
    assert states["4107.0"].state is JobState.FAILED  # removed by someone else


# --- rendering ----------------------------------------------------------------------------------
def _render(scheduler: str, **spec: object) -> str:
    rs = ResourceSpecification.from_task(spec, None, frozenset(), scheduler)
    chain = rs.launch_chain("/scratch/sandbox", None)
    context = batch_context(scheduler, "t1", "/scratch/sandbox", rs, chain,
                            ["python3", "-m", "job"])
    return render_batch_script(scheduler, context)


def test_lsf_script_has_bsub_directives():
    script = _render("lsf", num_nodes=2, ranks_per_node=4, cores_per_rank=2, walltime=5400,
                     memory="8G", partition="batch", account="abc123", exclusive=True)
    for line in ("#BSUB -J fnrelay-t1", "#BSUB -n 8", '#BSUB -R "span[ptile=4]"',
                 '#BSUB -R "affinity[core(2)]"', "#BSUB -M 8GB", "#BSUB -W 1:30",
                 "#BSUB -q batch", "#BSUB -P abc123", "#BSUB -x",
                 "#BSUB -o /scratch/sandbox/stdout"):
        assert line + "\n" in script


def test_flux_script_has_flux_batch_directives():
    script = _render("flux", num_nodes=2, ranks_per_node=4, cores_per_rank=2, gpus_per_node=4,
                     walltime=600, partition="pbatch", account="guests")
    for line in ("#flux: --job-name=fnrelay-t1", "#flux: -N 2", "#flux: -n 8", "#flux: -c 2",
                 "#flux: -g 1", "#flux: -t 600s", "#flux: -q pbatch", "#flux: -B guests",
                 "#flux: --output=/scratch/sandbox/stdout"):
        assert line + "\n" in script


def test_htcondor_script_carries_its_submit_commands():
    script = _render("htcondor", num_ranks=4, memory="2G", walltime=3600, gpus_per_node=1)
    description = htcondor.submit_description(script, "/scratch/sandbox/job.sh", "fnrelay-t1",
                                              "/scratch/sandbox")
    for line in ("executable = /scratch/sandbox/job.sh", "batch_name = fnrelay-t1",
                 "request_cpus = 4", "request_memory = 2G", "request_gpus = 1",
                 "allowed_execute_duration = 3600", "output = /scratch/sandbox/stdout"):
        assert line + "\n" in description
    assert description.endswith("queue 1\n")


@pytest.mark.parametrize("scheduler, spec, key", [
    ("htcondor", {"num_nodes": 2}, "num_nodes"),
    ("htcondor", {"partition": "long"}, "partition"),
    ("flux", {"memory": "4G"}, "memory"),
    ("lsf", {"qos": "high"}, "qos"),
    ("sge", {"gpus_per_node": 1}, "gpus_per_node"),
])
def test_settings_a_scheduler_cannot_express_are_refused(scheduler, spec, key):
    with pytest.raises(ResourceSpecificationError, match=f"'{key}': not supported by "
                                                         f"{scheduler}"):
        _render(scheduler, **spec)


# --- a task through the batch engine, on the stand-ins ------------------------------------------
def where():
    import os

    return os.getcwd()


@pytest.mark.parametrize("scheduler", ["lsf", "flux", "htcondor"])
def test_tasks_run_through_the_stand_in(scheduler, tmp_path, monkeypatch):
    env = standin_schedulers.install(scheduler, tmp_path / "standin")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rec = Recorder()
    engine = BatchEngine({"type": "batch", "scheduler": scheduler, "launcher": "none",
                          "poll_interval": 0.2}, tmp_path / "endpoint", rec.on_result,
                         rec.on_status)
    engine.start()
    try:
        ok = make_task(where, resource_specification={"walltime": 600})
        bad = make_task(ShellFunction("echo out; exit 4"))
        engine.submit(ok)
        engine.submit(bad)
        result = rec.result(ok.task_id, timeout=60)
        assert result.status == TaskState.SUCCESS.value, result.exception
        assert serialize.deserialize(result.result).endswith(ok.task_id)
        out = serialize.deserialize(rec.result(bad.task_id, timeout=60).result)
        assert (out.returncode, out.stdout.strip()) == (4, "out")
    finally:
        engine.shutdown()
    submits = [c for c in standin_schedulers.calls(env)
               if c["tool"] in ("bsub", "condor_submit") or c["argv"][:1] == ["batch"]]
    assert len(submits) == 2
    if scheduler == "lsf":  # the script went in on stdin, where bsub reads #BSUB lines
        assert "#BSUB -J fnrelay-" in submits[0]["stdin"]
    if scheduler == "htcondor":
        assert "request_cpus = 1" in submits[0]["stdin"]


def test_flux_endpoints_start_ranks_with_flux_run():
    from fnrelay_endpoint.engines.batch.engine import BatchConfig
    from fnrelay_wrappers.mpi import Layout, launcher_argv

    assert BatchConfig.from_dict({"scheduler": "flux"}).launcher == "flux"
    assert launcher_argv("flux", Layout(2, 4, 8, 2, 4)) == [
        "flux", "run", "-N", "2", "-n", "8", "-c", "2", "-g", "1"]
