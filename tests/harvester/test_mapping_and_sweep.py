"""How a worker maps to a task, and what the sweeper refuses to delete (no broker needed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from fnrelay.functions import MPIFunction, ShellFunction
from fnrelay.harvester import FnRelaySubmitter, FnRelaySweeper
from fnrelay.harvester.mapping import WorkerRefused, worker_task


def _config(**keys):
    base = {"executable": "pilot --worker {workerID} --dir {accessPoint} --site {computingSite}",
            "nCorePerNode": 4, "partition": "debug", "account": "atlas",
            "container": {"type": "apptainer", "image": "/images/pilot.sif"}}
    return SimpleNamespace(**{**base, **keys})


def test_plugins_take_queue_config_keys_as_attributes():
    plugin = FnRelaySubmitter(endpoint_id="abc", nCorePerNode=8, someHarvesterKey=[1])
    assert (plugin.endpoint_id, plugin.nCorePerNode, plugin.someHarvesterKey) == ("abc", 8, [1])


def test_single_node_worker_is_a_shell_function(make_worker):
    task = worker_task(make_worker(nCore=2, minRamCount=2000, maxWalltime=3600), _config())
    assert type(task.function) is ShellFunction
    assert task.function.timeout == 3600
    assert task.resource_specification == {
        "num_nodes": 1, "ranks_per_node": 1, "cores_per_rank": 2, "memory": "2000M",
        "walltime": 3600, "partition": "debug", "account": "atlas",
        "container": {"type": "apptainer", "image": "/images/pilot.sif"}}


def test_wide_or_mpi_worker_is_an_mpi_function(make_worker):
    wide = worker_task(make_worker(nCore=10, maxWalltime=None), _config())
    assert isinstance(wide.function, MPIFunction)
    assert {k: wide.resource_specification[k] for k in ("num_nodes", "ranks_per_node",
                                                         "num_ranks")} == \
        {"num_nodes": 3, "ranks_per_node": 4, "num_ranks": 10}
    assert "walltime" not in wide.resource_specification
    narrow_mpi = worker_task(make_worker(nCore=2, jobType="MPI"), _config())
    assert isinstance(narrow_mpi.function, MPIFunction)
    assert narrow_mpi.resource_specification["num_ranks"] == 2


def test_command_quotes_every_worker_value(make_worker):
    worker = make_worker(computingSite="a b; rm -rf ~", accessPoint="/data/it's here")
    task = worker_task(worker, _config(conda={"env": "pilot"}))
    cmd = ShellFunction.format_command(task.function, **task.kwargs)
    assert shlex.split(cmd) == ["pilot", "--worker", str(worker.workerID), "--dir",
                                "/data/it's here", "--site", "a b; rm -rf ~"]
    assert task.resource_specification["conda"] == {"env": "pilot"}


@pytest.mark.parametrize("attrs, config, why", [
    ({"nCore": -1}, {}, "nCore"),
    ({"minRamCount": "lots"}, {}, "minRamCount"),
    ({}, {"executable": "pilot {0}"}, "{0}"),
    ({}, {"executable": "pilot {nope.x}"}, "{nope.x}"),
    ({}, {"executable": ""}, "executable"),
    ({}, {"nCorePerNode": 0}, "nCorePerNode"),
])
def test_bad_workers_or_configs_are_refused(make_worker, attrs, config, why):
    with pytest.raises(WorkerRefused, match=re.escape(why)):
        worker_task(make_worker(**attrs), _config(**config))


def test_sweeper_deletes_only_inside_its_base(make_worker, access_base, tmp_path):
    sweeper = FnRelaySweeper(accessPointBase=str(access_base))
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data").write_text("keep")
    for path in (outside, access_base, access_base / ".." / "precious", Path("/")):
        ok, message = sweeper.sweep_worker(make_worker(accessPoint=str(path)))
        assert ok is False and "not inside" in message
    assert (outside / "data").read_text() == "keep" and access_base.is_dir()

    link = access_base / "link"
    link.symlink_to(outside)
    assert sweeper.sweep_worker(make_worker(accessPoint=str(link))) == (True, "")
    assert not link.exists() and (outside / "data").exists()

    inside = make_worker()
    Path(inside.accessPoint, "sub").mkdir(parents=True)
    assert sweeper.sweep_worker(inside) == (True, "")
    assert not Path(inside.accessPoint).exists()
    assert sweeper.sweep_worker(inside) == (True, "access point already removed")


def test_sweeper_without_a_base_deletes_nothing(make_worker):
    worker = make_worker()
    Path(worker.accessPoint).mkdir()
    ok, message = FnRelaySweeper().sweep_worker(worker)
    assert ok is False and "accessPointBase" in message
    assert Path(worker.accessPoint).is_dir()
