"""The local engine runs each task on an interpreter of its submitter's Python version: real
pyenv interpreters (3.10, 3.13) beside the endpoint's own (the suite's 3.11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fnrelay import serialize
from fnrelay.errors import ConfigurationError
from fnrelay.wire import TaskMessage, TaskState, new_id
from fnrelay_endpoint.config.model import EndpointConfig
from fnrelay_endpoint.engines.local.engine import LocalEngine
from support import pythons
from support.pythons import OWN, WAIT, ran_on, version_task


def test_each_task_runs_on_the_interpreter_of_its_version(engine, python_venv) -> None:
    py313, py310 = python_venv("3.13"), python_venv("3.10")
    e = engine(python_interpreters={"3.13": py313, "3.10": py310})
    tasks = {v: version_task(v) for v in ("3.13", "3.10", None, "3.9", OWN)}
    results = e.run(*tasks.values())
    assert {v: ran_on(results[t.task_id]) for v, t in tasks.items()} == {
        "3.13": "3.13", "3.10": "3.10", None: OWN, "3.9": OWN, OWN: OWN}
    # The history says which interpreter ran it: its path and full version.
    details = results[tasks["3.13"].task_id].details
    assert details["python"] == py313 and details["python_version"] == "3.13.0"
    assert e.engine.info()["python_versions"] == sorted(["3.10", "3.13", OWN],
                                                        key=lambda v: int(v.split(".")[1]))


def test_a_task_that_runs_a_while_is_reported_running_on_its_interpreter(
        engine, python_venv) -> None:
    py313 = python_venv("3.13")
    e = engine(python_interpreters={"3.13": py313})
    task = TaskMessage(task_id=new_id(), function_id=new_id(),
                       function=serialize.serialize_function(__import__("time").sleep),
                       payload=serialize.serialize_args((1.0,), {}), python_version="3.13")
    e.engine.submit(task)
    update = e.updates.get(timeout=WAIT)
    assert update.status == "running" and f"Python 3.13.0, {py313}" in update.detail
    assert e.results.get(timeout=WAIT).status == TaskState.SUCCESS.value


def test_cancel_reaches_a_task_on_another_interpreter(engine, python_venv) -> None:
    e = engine(python_interpreters={"3.13": python_venv("3.13")})
    task = TaskMessage(task_id=new_id(), function_id=new_id(),
                       function=serialize.serialize_function(__import__("time").sleep),
                       payload=serialize.serialize_args((300,), {}), python_version="3.13")
    e.engine.submit(task)
    assert e.updates.get(timeout=WAIT).task_id == task.task_id
    assert e.engine.cancel(task.task_id)
    assert e.results.get(timeout=WAIT).status == TaskState.CANCELLED.value


def config_error(**engine: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        config = EndpointConfig.from_dict({"broker_url": "http://localhost", "engine": {
            "type": "local", **engine}}, "config.yaml")
        LocalEngine.from_config(config.engine, Path("/nonexistent"), print, print)
    return str(info.value)


def test_an_interpreter_filed_under_another_version_is_refused_at_start(python_venv) -> None:
    py313 = python_venv("3.13")
    assert config_error(python_interpreters={"3.12": py313}) == (
        f"'engine.python_interpreters.3.12': {py313} is Python 3.13.0, not 3.12")


@pytest.mark.parametrize(("value", "says"), [
    ({3.12: "/usr/bin/python3"}, 'must be a quoted "major.minor"'),
    ({"3.12": "python3"}, "must be an absolute path"),
    ({"3.12": "/nonexistent/python3.12"}, "no Python interpreter at"),
    (["/usr/bin/python3"], "must map Python versions to interpreter paths"),
])
def test_the_interpreters_key_is_checked(value: Any, says: str) -> None:
    assert says in config_error(python_interpreters=value)


def test_an_interpreter_without_fnrelay_is_refused_at_start_saying_what_to_install() -> None:
    bare = pythons.interpreter("3.12")  # pyenv's own: no fnrelay there
    message = config_error(python_interpreters={"3.12": bare})
    assert "install fnrelay and dill in its environment" in message, message
    assert "\n" not in message


def test_declared_packages_are_refused_where_the_admin_does_not_allow_them(engine) -> None:
    e = engine()
    result = e.run(version_task(None, user_endpoint_config={"python_packages": ["six"]}))
    (only,) = result.values()
    assert only.status == TaskState.FAILED.value and only.exception is not None
    assert "makes no Python environments" in only.exception.message


def test_tasks_fail_rather_than_wait_when_another_interpreters_workers_do_not_start(
        tmp_path: Path) -> None:
    import queue

    from fnrelay_endpoint.engines.interpreters import Interpreter

    results: queue.Queue = queue.Queue()
    bare = pythons.interpreter("3.12")  # no fnrelay there: its workers die at once
    engine = LocalEngine(1, results.put, print, output_dir=tmp_path,
                         python=Interpreter(bare, pythons.FULL["3.12"]))
    engine.start()
    try:
        task = version_task("3.12")
        engine.submit(task)
        result = results.get(timeout=WAIT)
    finally:
        engine.shutdown()
    assert result.task_id == task.task_id and result.exception is not None
    assert result.exception.type == "fnrelay_endpoint.WorkerStartError"
    assert f"workers on {bare} (Python 3.12.1) do not start" in result.exception.message
    assert result.details["infrastructure"] is True


def test_versions_are_listed_in_numeric_order() -> None:
    from fnrelay_endpoint.engines.interpreters import Interpreter, Interpreters

    found = Interpreters({"3.9": Interpreter("/p/3.9", "3.9.18"),
                          "3.13": Interpreter("/p/3.13", "3.13.0")},
                         default=Interpreter("/p/3.11", "3.11.7"))
    assert found.versions() == ["3.9", "3.11", "3.13"]
    assert found.for_version("3.9").path == "/p/3.9"
    assert found.for_version("3.12").path == found.for_version(None).path == "/p/3.11"
