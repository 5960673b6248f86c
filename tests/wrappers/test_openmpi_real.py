"""A real OpenMPI launch through the chain's prefix (Debian openmpi-bin must be installed).

This test fails, not skips, when mpiexec is missing: MPI is part of what the test set-up
installs, and a silent skip would hide a broken MPI path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from fnrelay.functions import MPIFunction
from fnrelay_wrappers.chain import build_chain
from fnrelay_wrappers.mpi import Layout

RANK_PRINTER = [sys.executable, "-c",
                "import os; print('rank', os.environ['OMPI_COMM_WORLD_RANK'])"]


def openmpi_chain(sandbox: str):
    assert shutil.which("mpiexec"), "mpiexec not found: install Debian openmpi-bin"
    return build_chain(sandbox, Layout(num_ranks=2, ranks_per_node=2), launcher="openmpi",
                       launcher_settings={"oversubscribe": True,
                                          "allow_run_as_root": os.geteuid() == 0})


def test_two_ranks_answer_through_the_chain(tmp_path):
    chain = openmpi_chain(str(tmp_path))
    out = subprocess.run(["bash", "-c", chain.command_line(RANK_PRINTER)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split("\n")[:-1]) == ["rank 0", "rank 1"]


def test_mpifunction_uses_the_exported_prefix(tmp_path, monkeypatch):
    chain = openmpi_chain(str(tmp_path))
    for name, value in chain.env().items():
        monkeypatch.setenv(name, value)
    result = MPIFunction("{python} -c 'import os; print(os.environ[\"OMPI_COMM_WORLD_RANK\"])'")(
        python=sys.executable)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["0", "1"]
