"""On the real one-node Slurm: a Python function runs inside its task's conda env or image.

conda, micromamba and Apptainer cannot be installed here; the stand-ins of
tests/support/env_standins.py sit first on PATH (sbatch exports it to the job), record their
arguments and run the command in a real venv. What the function reports about itself
(``sys.prefix``) shows which interpreter the job started.
"""

from __future__ import annotations

import os
import sys

import pytest

from fnrelay import serialize
from fnrelay.wire import TaskState
from support.env_standins import calls, standin_tools


def where_am_i():
    import os
    import sys

    return (sys.prefix, os.environ.get("OMP_NUM_THREADS"),
            os.environ.get("SLURM_CPUS_PER_TASK"))


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict:
    return standin_tools(tmp_path_factory.mktemp("standins"))


def test_python_functions_run_in_the_tasks_env_or_image_not_the_endpoints(
        make_batch_engine, make_task, tools, monkeypatch):
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
    # A micromamba-only site: the admin names the tool, tasks name their env.
    engine, rec = make_batch_engine(defaults={"conda": {"tool": "micromamba"}})
    in_env = make_task(where_am_i, resource_specification={"conda": {"env": "sim"},
                                                           "cores_per_rank": 2})
    in_image = make_task(where_am_i, resource_specification={
        "container": {"type": "apptainer", "image": "/images/sim.sif"}})
    on_host = make_task(where_am_i)
    for task in (in_env, in_image, on_host):
        engine.submit(task)
    found = {}
    for name, task in (("env", in_env), ("image", in_image), ("host", on_host)):
        result = rec.result(task.task_id)
        assert result.status == TaskState.SUCCESS.value, result.exception
        found[name] = serialize.deserialize(result.result)
    assert found["env"] == (str(tools["env"]), "2", "2")
    assert found["image"][0] == str(tools["image"])
    assert found["host"][0] == sys.prefix
    tools_called = [c[:2] for c in calls(tools["log"])]
    assert tools_called.count(["micromamba", "__activate"]) == 1  # once per job
    assert ["apptainer", "exec"] in tools_called
