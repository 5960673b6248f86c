"""Container and conda command lines run for real where the tool works on this machine.

These are the only wrapper tests allowed to skip, each naming the missing tool; the golden
command-line tests in test_container.py and test_conda_and_prelude.py always run.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from fnrelay_wrappers.chain import build_chain
from fnrelay_wrappers.mpi import Layout

PROBE = ["sh", "-c", 'pwd; echo "box=$FNRELAY_TASK_SANDBOX"']


def run_chain(tmp_path, **parts) -> subprocess.CompletedProcess:
    chain = build_chain(str(tmp_path), Layout(), **parts)
    script = "\n".join([*chain.export_lines(), f"cd {shlex.quote(str(tmp_path))}",
                        chain.command_line(PROBE)])
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)


def require_working(tool: str, *probe: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")
    check = subprocess.run([tool, *probe], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        pytest.skip(f"{tool} does not work on this machine: {check.stderr.strip()[:200]}")


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_apptainer_runs_in_sandbox(tmp_path, runtime):
    require_working(runtime, "exec", "docker://busybox", "true")
    out = run_chain(tmp_path, container={"type": runtime, "image": "docker://busybox"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(tmp_path), f"box={tmp_path}"]


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_podman_runs_in_sandbox(tmp_path, runtime):
    require_working(runtime, "run", "--rm", "docker.io/library/busybox", "true")
    out = run_chain(tmp_path, container={"type": runtime, "image": "docker.io/library/busybox"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(tmp_path), f"box={tmp_path}"]


def test_conda_run_by_prefix(tmp_path):
    require_working("conda", "--version")
    envs = subprocess.run(["conda", "info", "--base"], capture_output=True, text=True)
    out = run_chain(tmp_path, conda={"prefix": envs.stdout.strip()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(tmp_path), f"box={tmp_path}"]
