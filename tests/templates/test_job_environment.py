"""A job's software environment, run for real under bash with stand-in tools on PATH.

conda, micromamba, Apptainer and podman cannot run here: tests/support/env_standins.py puts
stand-ins first on PATH that record their arguments and run the wrapped command in a real venv
(fnrelay and dill importable). The probe prints its ``sys.prefix``: the interpreter that ran
it must be the environment's or the image's, never the endpoint's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fnrelay_endpoint.engines.batch.templating import batch_context, render_batch_script
from fnrelay_endpoint.engines.resources import ResourceSpecification
from support.env_standins import calls, standin_tools

PROBE = ["-c", "import os, sys, dill, fnrelay; print(sys.prefix, os.getcwd(), "
               "os.environ.get('OMPI_COMM_WORLD_RANK'), os.environ.get('FNRELAY_TEST_HOST'))"]


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict:
    return standin_tools(tmp_path_factory.mktemp("standins"))


def run_job(tmp_path: Path, tools: dict, spec: dict, defaults: dict | None = None,
            launcher: str | None = None, settings: dict | None = None,
            direct: bool = False, home: Path | None = None) -> tuple[subprocess.CompletedProcess,
                                                                     Path]:
    """Render the task's script with the endpoint's python as the host interpreter; run it."""
    tools["log"].unlink(missing_ok=True)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    rs = ResourceSpecification.from_task(spec, defaults or {})
    chain = rs.launch_chain(str(sandbox), launcher, settings)
    command = [chain.interpreter(sys.executable), *PROBE]
    script = tmp_path / "job.sh"
    script.write_text(render_batch_script("slurm", batch_context(
        "slurm", "t-1", str(sandbox), rs, chain, command, launch=launcher is not None)))
    script.chmod(0o755)
    env = {"PATH": f"{tools['bin']}:{os.path.dirname(sys.executable)}:/usr/bin:/bin",
           "HOME": str(home or tmp_path), "FNRELAY_TEST_HOST": "leaks",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    argv = [str(script)] if direct else ["bash", str(script)]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    return proc, sandbox


@pytest.mark.parametrize("tool", ["conda", "micromamba"])
def test_python_runs_with_the_envs_interpreter_activated_once(tmp_path, tools, tool):
    # The admin names the site's tool; the task names its env. Activation runs under set -u
    # in the stand-in as in conda's activate.d scripts: the job must not die of it.
    proc, sandbox = run_job(tmp_path, tools, {"conda": {"env": "sim"}},
                            {"conda": {"tool": tool}})
    assert proc.returncode == 0, proc.stderr
    prefix, cwd, _, _ = proc.stdout.split()
    assert (prefix, cwd) == (str(tools["env"]), str(sandbox))
    hook = ["shell.bash", "hook"] if tool == "conda" else ["shell", "hook", "--shell", "bash"]
    assert calls(tools["log"]) == [[tool, *hook], [tool, "__activate", "sim"]]


def test_python_in_an_apptainer_image_runs_the_images_interpreter(tmp_path, tools):
    proc, sandbox = run_job(tmp_path, tools, {
        "container": {"type": "apptainer", "image": "/images/sim.sif"}, "gpus_per_node": 1})
    assert proc.returncode == 0, proc.stderr
    prefix, cwd, _, _ = proc.stdout.split()
    assert (prefix, cwd) == (str(tools["image"]), str(sandbox))
    [call] = calls(tools["log"])
    assert call[:6] == ["apptainer", "exec", "--bind", f"{sandbox}:{sandbox}", "--pwd",
                        str(sandbox)]
    assert call[6:9] == ["--nv", "/images/sim.sif", "python3"]


def test_conda_env_inside_an_image_wraps_the_command_with_conda_run(tmp_path, tools):
    proc, _ = run_job(tmp_path, tools, {
        "container": {"type": "apptainer", "image": "/images/sim.sif"},
        "conda": {"env": "sim"}})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == str(tools["env"])
    assert [c[0] for c in calls(tools["log"])] == ["apptainer", "conda"]


def test_podman_ranks_get_their_mpi_variables_and_nothing_else(tmp_path, tools):
    # Real OpenMPI starts two ranks; each enters the podman stand-in, which passes only what
    # -e names, as podman does: the rank's OMPI_* reach it, the host's other variables do not.
    assert shutil.which("mpiexec"), "mpiexec not found: install Debian openmpi-bin"
    proc, sandbox = run_job(
        tmp_path, tools,
        {"num_ranks": 2, "container": {"type": "podman", "image": "ghcr.io/org/sim:1"}},
        launcher="openmpi",
        settings={"oversubscribe": True, "allow_run_as_root": os.geteuid() == 0})
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.splitlines())
    assert lines == [f"{tools['image']} {sandbox} {rank} None" for rank in ("0", "1")]
    call = calls(tools["log"])[0]
    assert call[:5] == ["podman", "run", "--rm", "--network=host", "--ipc=host"]
    assert f"--user={os.getuid()}:{os.getgid()}" in call


def test_login_shell_makes_module_available(tmp_path, tools):
    # `module` is a shell function that the login scripts define (Lmod, Environment Modules):
    # a job without a login shell has no `module`; with one, its module loads run.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bash_profile").write_text('module() { echo "loaded $2" >> "$HOME/modules"; }\n')
    admin = {"modules": ["gcc/12.2"]}
    proc, _ = run_job(tmp_path, tools, {}, admin, direct=True, home=home)
    assert proc.returncode == 127
    assert "fnrelay: job set-up failed (exit 127): module load gcc/12.2" in proc.stderr
    shutil.rmtree(tmp_path / "sandbox")
    proc, _ = run_job(tmp_path, tools, {}, {**admin, "login_shell": True}, direct=True,
                      home=home)
    assert proc.returncode == 0, proc.stderr
    assert (home / "modules").read_text() == "loaded gcc/12.2\n"
