"""MPI launcher command lines per implementation."""

from __future__ import annotations

import pytest

from fnrelay_wrappers.mpi import (
    LAUNCHERS,
    Layout,
    aprun,
    launcher_argv,
    mpich,
    openmpi,
    pals,
    srun,
)
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
    assert join(mpich(TWO_BY_FOUR)) == "mpiexec -n 8 -ppn 4 -bind-to core:2"
    assert join(mpich(TWO_BY_FOUR, hostfile=EnvRef("PBS_NODEFILE"))) == \
        'mpiexec -n 8 -ppn 4 --hostfile "$PBS_NODEFILE" -bind-to core:2'
    assert join(mpich(Layout(2, 4, 8), hosts=["n1", "n2"])) == \
        "mpiexec -n 8 -ppn 4 -hosts n1,n2"
    assert set(LAUNCHERS) >= {"srun", "openmpi", "mpich", "pals", "aprun", "polaris"}
    with pytest.raises(ValueError):
        mpich(TWO_BY_FOUR, hostfile="/h", hosts=["n1"])


def test_aprun():
    assert join(aprun(TWO_BY_FOUR)) == "aprun -n 8 -N 4 -d 2 -cc depth"
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


FOUR_GPUS = Layout(num_nodes=2, ranks_per_node=4, num_ranks=8, cores_per_rank=8,
                   gpus_per_node=4)


def test_hostfile_from_config_text_expands_in_the_job():
    # The config is YAML text: "$PBS_NODEFILE" must reach the job as a variable, not a literal.
    assert join(mpich(Layout(), hostfile="$PBS_NODEFILE")) == \
        'mpiexec -n 1 -ppn 1 --hostfile "$PBS_NODEFILE"'
    assert join(openmpi(Layout(), "--hostfile ${PBS_NODEFILE}")) == \
        'mpiexec -n 1 --map-by ppr:1:node --hostfile "$PBS_NODEFILE"'


def test_pals_binds_by_depth_and_gives_each_rank_its_gpu():
    argv = pals(FOUR_GPUS, hostfile="$PBS_NODEFILE")
    assert join(argv[:12]) == ('mpiexec -n 8 --ppn 4 --hostfile "$PBS_NODEFILE" --depth=8 '
                               '--cpu-bind depth sh -c')
    assert argv[13:] == ["fnrelay-gpu-affinity", "4", "1", "forward", "CUDA_VISIBLE_DEVICES"]
    assert join(pals(Layout(num_ranks=2, ranks_per_node=2))) == "mpiexec -n 2 --ppn 2"


def test_polaris_hands_out_gpus_last_first():
    argv = launcher_argv("polaris", FOUR_GPUS)
    assert argv[-5:] == ["fnrelay-gpu-affinity", "4", "1", "reverse", "CUDA_VISIBLE_DEVICES"]


def test_srun_gives_gpus_per_task_when_they_divide_evenly():
    assert join(srun(FOUR_GPUS, cpu_bind="cores")) == \
        "srun -N 2 -n 8 --ntasks-per-node=4 --cpus-per-task=8 --cpu-bind=cores " \
        "--gpus-per-task=1"
    assert join(launcher_argv("frontier", FOUR_GPUS)) == \
        "srun -N 2 -n 8 --ntasks-per-node=4 --cpus-per-task=8 --gpus-per-task=1 " \
        "--gpu-bind=closest"


@pytest.mark.parametrize("kind, settings, error", [
    ("pals", {"cpu_bind": "a b"}, ValueError),
    ("pals", {"gpu_vendor": "matrox"}, ValueError),
    ("srun", {"colour": 1}, TypeError),
    ("openmpi", {"oversubscribe": "yes"}, ValueError),
])
def test_bad_launcher_settings_are_refused(kind, settings, error):
    with pytest.raises(error):
        launcher_argv(kind, Layout(), **settings)
