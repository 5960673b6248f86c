"""Rendered job scripts run under plain bash (directives are comments to bash).

What the batch engine relies on after the job has left the scheduler: the command runs in the
sandbox with the chain's exports, and its exit status is in <sandbox>/exit_status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fnrelay_endpoint.engines.batch.templating import batch_context, render_batch_script
from fnrelay_endpoint.engines.resources import ResourceSpecification

TASK_ID = "t-1"


def run_script(tmp_path: Path, command: list[str], scheduler: str = "slurm", spec=None,
               defaults=None, launcher=None, settings=None, launch=False
               ) -> tuple[subprocess.CompletedProcess, Path]:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    rs = ResourceSpecification.from_task(spec or {}, defaults or {})
    chain = rs.launch_chain(str(sandbox), launcher, settings)
    text = render_batch_script(scheduler, batch_context(scheduler, TASK_ID, str(sandbox), rs,
                                                        chain, command, launch=launch))
    script = tmp_path / "job.sh"
    script.write_text(text)
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    return proc, sandbox


def exit_status(sandbox: Path) -> int:
    return int((sandbox / "exit_status").read_text())


@pytest.mark.parametrize("scheduler", ["slurm", "pbspro"])
def test_command_runs_in_sandbox_with_exports(tmp_path, scheduler):
    probe = [sys.executable, "-c",
             "import os; print(os.getcwd()); "
             "print(*(os.environ[k] for k in ('FNRELAY_NUM_RANKS', 'FNRELAY_NUM_NODES', "
             "'FNRELAY_TASK_SANDBOX', 'FNRELAY_MPI_PREFIX', 'PARSL_MPI_PREFIX')), sep='|')"]
    proc, sandbox = run_script(tmp_path, probe, scheduler, {"num_ranks": 2}, launcher="openmpi")
    assert proc.returncode == 0, proc.stderr
    cwd, values = proc.stdout.splitlines()
    assert cwd == str(sandbox)
    prefix = "mpiexec -n 2 --map-by ppr:2:node"
    assert values == f"2|1|{sandbox}|{prefix}|{prefix}"
    assert exit_status(sandbox) == 0


def test_nonzero_exit_is_recorded(tmp_path):
    proc, sandbox = run_script(tmp_path, ["sh", "-c", "echo oops >&2; exit 3"])
    assert proc.returncode == 3 and "oops" in proc.stderr
    assert exit_status(sandbox) == 3
    assert not (sandbox / "exit_status.tmp").exists()


def test_odd_arguments_reach_the_command_intact(tmp_path):
    args = ["it's", "$(touch pwned)", "`id`", "a b", "*", ";", "\n"]
    proc, sandbox = run_script(tmp_path, [sys.executable, "-c",
                                          "import sys, json; print(json.dumps(sys.argv[1:]))",
                                          *args])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == args
    assert not list(tmp_path.rglob("pwned"))


def test_pre_exec_sees_the_exports_and_runs_before_the_command(tmp_path):
    proc, sandbox = run_script(
        tmp_path, ["cat", "marker"],
        defaults={"pre_exec": ['echo "ready in $FNRELAY_TASK_SANDBOX" > marker']})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ready in {sandbox}"


def test_failing_setup_stops_before_the_command_and_is_recorded(tmp_path):
    proc, sandbox = run_script(tmp_path, ["touch", "ran"],
                               defaults={"pre_exec": ["false"]})
    assert proc.returncode == 1
    assert exit_status(sandbox) == 1
    assert not (sandbox / "ran").exists()


def test_terminated_job_records_143(tmp_path):
    # What the scheduler does at walltime or scancel: SIGTERM to the job's processes.
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    rs = ResourceSpecification.from_task({}, {})
    text = render_batch_script("slurm", batch_context(
        "slurm", TASK_ID, str(sandbox), rs, rs.launch_chain(str(sandbox)),
        ["sh", "-c", "touch started; exec sleep 60"]))
    script = tmp_path / "job.sh"
    script.write_text(text)
    proc = subprocess.Popen(["bash", str(script)], start_new_session=True)
    try:
        for _ in range(600):
            if (sandbox / "started").exists():
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert exit_status(sandbox) == 143


def test_job_body_launches_two_openmpi_ranks(tmp_path):
    # Fails (does not skip) without Debian openmpi-bin: MPI is part of the test set-up.
    assert shutil.which("mpiexec"), "mpiexec not found: install Debian openmpi-bin"
    proc, sandbox = run_script(
        tmp_path, [sys.executable, "-c", "import os; print(os.environ['OMPI_COMM_WORLD_RANK'])"],
        spec={"num_ranks": 2}, launcher="openmpi",
        settings={"oversubscribe": True, "allow_run_as_root": os.geteuid() == 0}, launch=True)
    assert proc.returncode == 0, proc.stderr
    # One digit per rank; mpiexec may interleave the ranks' forwarded output.
    assert sorted("".join(proc.stdout.split())) == ["0", "1"]
    assert exit_status(sandbox) == 0
