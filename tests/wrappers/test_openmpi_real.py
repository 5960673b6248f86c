"""A real OpenMPI launch through the chain's prefix (Debian openmpi-bin must be installed).

This test fails, not skips, when mpiexec is missing: MPI is part of what the test set-up
installs, and a silent skip would hide a broken MPI path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from fnrelay.functions import MPIFunction, ShellFunction
from fnrelay_wrappers.chain import build_chain
from fnrelay_wrappers.mpi import Layout

# Each rank leaves a file: mpiexec forwards the ranks' stdout in chunks that may interleave.
RANK_WRITER = [sys.executable, "-c",
               "import os; r = os.environ['OMPI_COMM_WORLD_RANK']; "
               "open(os.path.join(os.environ['FNRELAY_TASK_SANDBOX'], 'rank-' + r), 'w')"]


def openmpi_chain(sandbox: str):
    assert shutil.which("mpiexec"), "mpiexec not found: install Debian openmpi-bin"
    return build_chain(sandbox, Layout(num_ranks=2, ranks_per_node=2), launcher="openmpi",
                       launcher_settings={"oversubscribe": True,
                                          "allow_run_as_root": os.geteuid() == 0})


def test_two_ranks_answer_through_the_chain(tmp_path):
    chain = openmpi_chain(str(tmp_path))
    script = chain.export_lines() + [chain.command_line(RANK_WRITER)]
    out = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.glob("rank-*")) == ["rank-0", "rank-1"]


def test_mpifunction_uses_the_exported_prefix(tmp_path, monkeypatch):
    chain = openmpi_chain(str(tmp_path))
    for name, value in chain.env().items():
        monkeypatch.setenv(name, value)
    result = MPIFunction("{python} -c 'import os; print(os.environ[\"OMPI_COMM_WORLD_RANK\"])'")(
        python=sys.executable)
    assert result.returncode == 0, result.stderr
    # One digit per rank; the forwarded lines may interleave, the digits cannot go missing.
    assert sorted("".join(result.stdout.split())) == ["0", "1"]


def test_a_command_written_for_globus_computes_mpifunction_runs_its_ranks(tmp_path, monkeypatch):
    # Globus Compute's MPIFunction runs `$PARSL_MPI_PREFIX <cmd>`; the chain exports it.
    chain = openmpi_chain(str(tmp_path))
    for name, value in chain.env().items():
        monkeypatch.setenv(name, value)
    result = ShellFunction(
        "$PARSL_MPI_PREFIX {python} -c 'import os; print(os.environ[\"OMPI_COMM_WORLD_RANK\"])'"
    )(python=sys.executable)
    assert result.returncode == 0, result.stderr
    assert sorted("".join(result.stdout.split())) == ["0", "1"]


GPU_WRITER = [sys.executable, "-c",
              "import os; r = os.environ['OMPI_COMM_WORLD_RANK']; "
              "open(os.path.join(os.environ['FNRELAY_TASK_SANDBOX'], 'gpus-' + r), 'w')"
              ".write(os.environ['CUDA_VISIBLE_DEVICES'])"]


def test_gpu_affinity_step_gives_each_real_rank_its_own_gpus(tmp_path):
    # Real mpiexec sets OMPI_COMM_WORLD_LOCAL_RANK; the step turns it into the rank's GPUs.
    assert shutil.which("mpiexec"), "mpiexec not found: install Debian openmpi-bin"
    layout = Layout(num_ranks=2, ranks_per_node=2, gpus_per_node=4)
    seen = {}
    for order, expected in (("forward", ["0,1", "2,3"]), ("reverse", ["3,2", "1,0"])):
        chain = build_chain(str(tmp_path), layout, launcher="openmpi", launcher_settings={
            "oversubscribe": True, "allow_run_as_root": os.geteuid() == 0,
            "gpu_affinity": True, "gpu_order": order})
        script = chain.export_lines() + [chain.command_line(GPU_WRITER)]
        out = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        seen[order] = [(tmp_path / f"gpus-{r}").read_text() for r in (0, 1)]
        assert seen[order] == expected
