"""MPI launcher command lines per implementation."""

from __future__ import annotations

import pytest

from fnrelay_wrappers.mpi import LAUNCHERS, Layout, aprun, launcher_argv, mpich, openmpi, srun
from fnrelay_wrappers.shell import EnvRef, join

TWO_BY_FOUR = Layout(num_nodes=2, ranks_per_node=4, num_ranks=8, cores_per_rank=2,
                     gpus_per_node=1)


def test_srun():
    assert join(srun(TWO_BY_FOUR)) == \
        "srun -N 2 -n 8 --ntasks-per-node=4 --cpus-per-task=2 --gpus-per-node=1"
    assert join(srun(Layout(num_ranks=2, ranks_per_node=2))) == \
        "srun -N 1 -n 2 --ntasks-per-node=2"


def test_openmpi_maps_ranks_per_node():
    assert join(openmpi(TWO_BY_FOUR)) == "mpiexec -n 8 --map-by ppr:4:node:PE=2"
    assert join(openmpi(Layout(num_ranks=2, ranks_per_node=2), oversubscribe=True,
                        allow_run_as_root=True)) == \
        "mpiexec -n 2 --map-by ppr:2:node --oversubscribe --allow-run-as-root"


def test_openmpi_hostfile_from_environment():
    assert join(openmpi(Layout(), hostfile=EnvRef("PBS_NODEFILE"))) == \
        'mpiexec -n 1 --map-by ppr:1:node --hostfile "$PBS_NODEFILE"'


def test_mpich_and_pals_use_ppn():
    assert join(mpich(TWO_BY_FOUR)) == "mpiexec -n 8 -ppn 4"
    assert join(mpich(TWO_BY_FOUR, hostfile=EnvRef("PBS_NODEFILE"))) == \
        'mpiexec -n 8 -ppn 4 --hostfile "$PBS_NODEFILE"'
    assert join(mpich(TWO_BY_FOUR, hosts=["n1", "n2"])) == "mpiexec -n 8 -ppn 4 -hosts n1,n2"
    assert LAUNCHERS["pals"] is mpich
    with pytest.raises(ValueError):
        mpich(TWO_BY_FOUR, hostfile="/h", hosts=["n1"])


def test_aprun():
    assert join(aprun(TWO_BY_FOUR)) == "aprun -n 8 -N 4 -d 2"
    assert join(aprun(Layout(num_ranks=3, ranks_per_node=3))) == "aprun -n 3 -N 3"


def test_launcher_options_are_quoted_arguments():
    line = join(srun(Layout(), "--mpi=pmix --export='ALL,X=a b'"))
    assert line == "srun -N 1 -n 1 --ntasks-per-node=1 --mpi=pmix '--export=ALL,X=a b'"


def test_launcher_argv_by_name():
    assert launcher_argv("openmpi", Layout(), oversubscribe=True)[-1] == "--oversubscribe"
    with pytest.raises(ValueError, match="unknown MPI launcher 'mvapich'"):
        launcher_argv("mvapich", Layout())


@pytest.mark.parametrize("kwargs", [{"num_nodes": 0}, {"num_ranks": True},
                                    {"cores_per_rank": -1}, {"ranks_per_node": "2"}])
def test_layout_refuses_bad_numbers(kwargs):
    with pytest.raises(ValueError):
        Layout(**kwargs)
