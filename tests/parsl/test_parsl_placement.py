"""Where the parsl engine's pilots and MPI tasks land: host lists per task, PBS placement.

Parsl's MPIExecutor runs several tasks in one block at once and names each task's nodes in
PARSL_MPI_NODELIST; the launcher must be confined to them, or every task starts on the block's
first node. PBSPro cannot run here: its pilot script is rendered by Parsl's real
PBSProProvider and handed to a stand-in `qsub` on PATH that keeps the script it was given.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.engines.parsl.settings import ParslSettings, build_config
from fnrelay_endpoint.engines.parsl.worker import mpi_env


def _mpi(launcher: str, num_nodes: int = 1, ranks_per_node: int = 2, **settings: object) -> dict:
    layout = {"num_nodes": num_nodes, "ranks_per_node": ranks_per_node,
              "num_ranks": num_nodes * ranks_per_node}
    return {"layout": layout, "launcher": launcher, "launcher_settings": settings}


def test_one_node_openmpi_task_is_confined_to_the_node_parsl_gave_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PARSL_MPI_NODELIST", "node-b")
    prefix = mpi_env(_mpi("openmpi"), str(tmp_path))["FNRELAY_MPI_PREFIX"]
    assert "--host node-b:2" in prefix


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs OpenMPI (make test-deps)")
def test_the_one_node_host_list_starts_real_openmpi_ranks_on_that_node(monkeypatch, tmp_path):
    host = socket.gethostname()
    monkeypatch.setenv("PARSL_MPI_NODELIST", host)
    env = mpi_env(_mpi("openmpi", oversubscribe=True, allow_run_as_root=True), str(tmp_path))
    out = subprocess.run(f"{env['FNRELAY_MPI_PREFIX']} hostname", shell=True, text=True,
                         capture_output=True, timeout=60, check=True).stdout
    assert out.split() == [host, host]


def test_aprun_gets_the_alps_node_ids_of_the_task(monkeypatch, tmp_path):
    monkeypatch.setenv("PARSL_MPI_NODELIST", "nid00012,nid00013")
    prefix = mpi_env(_mpi("aprun", num_nodes=2), str(tmp_path))["FNRELAY_MPI_PREFIX"]
    assert prefix.startswith("aprun -n 4 -N 2 -L 12,13")


def test_an_admins_hostfile_is_not_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("PARSL_MPI_NODELIST", "node-b")
    prefix = mpi_env(_mpi("openmpi", hostfile="/etc/hosts.mpi"), str(tmp_path))
    assert prefix["FNRELAY_MPI_PREFIX"].endswith("--hostfile /etc/hosts.mpi")


@pytest.fixture
def qsub_stand_in(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in `qsub` (PBSPro cannot run here) that keeps the script and prints a job id."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    qsub = bin_dir / "qsub"
    qsub.write_text(f'#!/bin/sh\nfor a; do last="$a"; done\ncp "$last" {kept}\n'
                    'echo 4242.pbs-server\n')
    qsub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return kept


def _pbs_pilot_script(config: dict, run_dir: Path, kept: Path) -> str:
    settings = ParslSettings.from_dict({"type": "parsl", "provider": "pbspro", **config})
    provider = build_config(settings, run_dir).executors[0].provider
    provider.script_dir = str(run_dir)
    assert provider.submit("echo pilot", 1, "block") == "4242.pbs-server"
    return kept.read_text()


@pytest.mark.parametrize("exclusive, place", [(True, "scatter:excl"), (False, "scatter")])
def test_pbs_pilot_blocks_ask_for_scattered_chunks(qsub_stand_in, tmp_path, exclusive, place):
    script = _pbs_pilot_script({"nodes_per_block": 2, "exclusive": exclusive}, tmp_path,
                               qsub_stand_in)
    assert "#PBS -l select=2:ncpus=1" in script
    assert f"#PBS -l place={place}\n" in script


def test_an_admins_own_pbs_place_wins(qsub_stand_in, tmp_path):
    script = _pbs_pilot_script({"scheduler_options": "#PBS -l place=pack"}, tmp_path,
                               qsub_stand_in)
    assert "place=pack" in script and "scatter" not in script


def test_qos_on_pbspro_is_refused_not_ignored():
    with pytest.raises(ConfigurationError, match=r"engine\.qos.*PBSPro has no QOS"):
        ParslSettings.from_dict({"type": "parsl", "provider": "pbspro", "qos": "debug"})


def test_a_typed_pbspro_provider_scatters_its_pilots_too(qsub_stand_in, tmp_path):
    spec = {"type": "PBSProProvider", "nodes_per_block": 2, "cpus_per_node": 32,
            "scheduler_options": "#PBS -l filesystems=home:eagle"}
    settings = ParslSettings.from_dict({"type": "parsl", "provider": spec})
    provider = build_config(settings, tmp_path).executors[0].provider
    provider.script_dir = str(tmp_path)
    provider.submit("echo pilot", 1, "block")
    script = qsub_stand_in.read_text()
    assert "#PBS -l select=2:ncpus=32" in script
    assert "#PBS -l place=scatter\n#PBS -l filesystems=home:eagle\n" in script
