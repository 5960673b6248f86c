"""Environments made with uv from a configured interpreter: once, from the admin's packages,
with a task's declared packages only where allowed."""

from __future__ import annotations

import threading
from pathlib import Path

from fnrelay.wire import TaskState
from support import pythons
from support.pythons import OWN, ran_on, version_task


def test_a_task_runs_in_an_environment_uv_makes_from_the_interpreter_once(
        engine, wheelhouse: str, tmp_path: Path) -> None:
    e = engine(python_interpreters={"3.12": pythons.interpreter("3.12")},
               python_environments={"fnrelay": "fnrelay", "find_links": [wheelhouse]})
    tasks = [version_task("3.12") for _ in range(3)]
    # Three at once: they wait for one build.
    submits = [threading.Thread(target=e.engine.submit, args=(t,)) for t in tasks]
    for t in submits:
        t.start()
    results = [e.results.get(timeout=300) for _ in tasks]
    assert [ran_on(r) for r in results] == ["3.12"] * 3
    made = [p for p in (tmp_path / "python_envs").iterdir() if not p.name.startswith(".")]
    assert len(made) == 1 and made[0].name.startswith("py3.12-")
    assert {r.details["python"] for r in results} == {str(made[0] / "bin" / "python")}
    assert results[0].details["python_version"] == pythons.FULL["3.12"]


def test_a_build_that_fails_fails_its_tasks_with_uvs_message(engine, wheelhouse: str,
                                                              tmp_path: Path) -> None:
    e = engine(python_interpreters={"3.12": pythons.interpreter("3.12")},
               python_environments={"fnrelay": "fnrelay", "find_links": [wheelhouse],
                                    "allow_packages": True})
    task = version_task("3.12", user_endpoint_config={
        "python_packages": ["fnrelay-test-no-such-package"]})
    (result,) = e.run(task).values()
    assert result.status == TaskState.FAILED.value and result.exception is not None
    assert result.exception.type == "fnrelay_endpoint.PythonEnvironmentError"
    message = result.exception.message
    assert "cannot make the task's Python 3.12 environment" in message
    assert "fnrelay-test-no-such-package" in message  # uv's own words name it
    # Nothing half-made is left, and no environment claims to be ready.
    assert [p.name for p in (tmp_path / "python_envs").iterdir()] == []


def test_declared_packages_are_refused_unless_the_admin_allows_them(
        engine, wheelhouse: str) -> None:
    e = engine(python_environments={"find_links": [wheelhouse]})
    (result,) = e.run(version_task(None, user_endpoint_config={
        "python_packages": ["dill"]})).values()
    assert result.status == TaskState.FAILED.value and result.exception is not None
    assert "allow_packages" in result.exception.message


def test_a_tasks_declared_packages_are_installed_where_the_admin_allows_them(
        engine, wheelhouse: str, tmp_path: Path) -> None:
    e = engine(python_environments={"fnrelay": "fnrelay", "find_links": [wheelhouse],
                                    "allow_packages": True})
    task = version_task(None, user_endpoint_config={"python_packages": ["dill"]})
    (result,) = e.run(task).values()
    assert ran_on(result) == OWN
    # An environment of its own, made from the endpoint's own version.
    made = [p.name for p in (tmp_path / "python_envs").iterdir() if not p.name.startswith(".")]
    assert len(made) == 1 and made[0].startswith(f"py{OWN}-")
    assert result.details["python"] == str(tmp_path / "python_envs" / made[0] / "bin" / "python")


def test_a_globus_compute_task_gets_its_sdk_in_another_versions_environment(
        tmp_path: Path) -> None:
    from fnrelay_endpoint.engines import pyenvs
    from fnrelay_endpoint.engines.interpreters import Interpreter, Interpreters

    envs = pyenvs.Environments(pyenvs.EnvSettings(), tmp_path)
    versions = Interpreters({"3.13": Interpreter("/p/3.13", "3.13.0")},
                            default=Interpreter("/p/3.11", "3.11.7"))
    spec = pyenvs.place("3.13", {}, versions, envs, globus=True)
    assert isinstance(spec, pyenvs.EnvSpec) and spec.base.path == "/p/3.13"
    # As fnrelay's globus-compute extra pins it (pyproject.toml).
    assert spec.packages == (pyenvs.globus_requirement(),)
    assert spec.packages[0].startswith("globus-compute-sdk<")
    assert pyenvs.place("3.13", {}, versions, envs).packages == ()  # type: ignore[union-attr]
    assert pyenvs.place(None, {}, versions, envs, globus=True) is None  # the endpoint's own
