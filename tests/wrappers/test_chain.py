"""The launch chain: order, exports, and the command line a job body runs."""

from __future__ import annotations

import subprocess

import pytest

from fnrelay_wrappers.chain import LaunchChain, build_chain
from fnrelay_wrappers.mpi import Layout

BOX = "/scratch/fnrelay/t1"
LAYOUT = Layout(num_nodes=2, ranks_per_node=2, num_ranks=4)
FULL = dict(launcher="srun", container={"type": "apptainer", "image": "/img/a.sif"},
            conda={"env": "sci"})


def test_order_is_launcher_container_conda_command():
    chain = build_chain(BOX, LAYOUT, **FULL)
    assert chain.command_line(["python3", "x.py"]) == (
        "srun -N 2 -n 4 --ntasks-per-node=2 "
        f"apptainer exec --bind {BOX}:{BOX} --pwd {BOX} /img/a.sif "
        "conda run --no-capture-output -n sci "
        "python3 x.py"
    )


def test_worker_forms_leave_out_launcher_or_all_wrapping():
    chain = build_chain(BOX, LAYOUT, **FULL)
    assert chain.command_line(["w"], launch=False).startswith("apptainer exec ")
    assert chain.command_line(["w"], launch=False).endswith("-n sci w")
    assert chain.command_line(["w"], launch=False, wrap=False) == "w"


def test_exports():
    chain = build_chain(BOX, LAYOUT, **FULL)
    env = chain.env()
    assert list(env) == ["FNRELAY_MPI_PREFIX", "PARSL_MPI_PREFIX", "FNRELAY_NUM_RANKS",
                         "FNRELAY_NUM_NODES", "FNRELAY_TASK_SANDBOX"]
    # Globus Compute's MPIFunction runs `$PARSL_MPI_PREFIX cmd`: the same launcher.
    assert env["FNRELAY_MPI_PREFIX"] == env["PARSL_MPI_PREFIX"] == chain.mpi_prefix()
    assert env["FNRELAY_MPI_PREFIX"].startswith("srun -N 2 -n 4 ")
    assert env["FNRELAY_MPI_PREFIX"].endswith("conda run --no-capture-output -n sci")
    assert (env["FNRELAY_NUM_RANKS"], env["FNRELAY_NUM_NODES"], env["FNRELAY_TASK_SANDBOX"]) \
        == ("4", "2", BOX)


def test_no_launcher_exports_no_mpi_prefix():
    # MPIFunction then falls back to `mpiexec -n $FNRELAY_NUM_RANKS`.
    chain = build_chain(BOX, Layout(num_ranks=2, ranks_per_node=2))
    assert "FNRELAY_MPI_PREFIX" not in chain.env() and chain.mpi_prefix() == ""
    assert "PARSL_MPI_PREFIX" not in chain.env()
    assert chain.command_line(["echo", "a b"]) == "echo 'a b'"


def test_export_lines_survive_bash_with_odd_values(tmp_path):
    odd_box = str(tmp_path / "box+=@%")
    chain = build_chain(odd_box, LAYOUT, launcher="openmpi",
                        launcher_options=["-x", "A=$(id) 'q'"])
    script = "\n".join(chain.export_lines()) + '\nprintf "%s\\n" "$FNRELAY_MPI_PREFIX" ' \
        '"$FNRELAY_TASK_SANDBOX"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    prefix, box = out.stdout.splitlines()
    assert box == odd_box
    assert prefix == chain.mpi_prefix()
    # and the prefix, evaluated again by MPIFunction's bash, gives the argument back intact
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {prefix}"], capture_output=True,
                           check=True).stdout.decode().split("\0")[:-1]
    assert words[-2:] == ["-x", "A=$(id) 'q'"]


def test_prelude_collects_modules_then_pre_exec():
    chain = build_chain(BOX, LAYOUT, modules=["gcc/12"], pre_exec=["source /etc/site.sh"])
    assert chain.prelude == ("module load gcc/12", "source /etc/site.sh")


def test_command_must_be_argv():
    chain = LaunchChain(sandbox=BOX)
    with pytest.raises(ValueError, match="argv list"):
        chain.command_line("rm -rf /")
    with pytest.raises(ValueError):
        chain.command_line([])
