"""Through the whole stack (SDK -> broker -> RabbitMQ -> endpoint on 3.11 -> a worker on the
task's version): local workers on 3.13 and 3.10, a Slurm job on 3.13, and a function that can
travel only as 3.13 bytecode, submitted from a real SDK on 3.13.

The SDK stamps its own version on each task; to reach each of the endpoint's Pythons from this
3.11 process, the Executor's task messages are stamped with another before they are published.
"""

from __future__ import annotations

import os
import platform
import subprocess
import textwrap

import pytest

from fnrelay import Executor
from support.direct_path import direct_ready
from support.pythons import FULL, interpreter
from support.waiting import wait_for

SLURM_ENGINE = {"type": "batch", "scheduler": "slurm", "launcher": "srun", "poll_interval": 0.5}
#: Set on every task message the Executor publishes (a stand-in for the SDK side).
STAMP = """
import fnrelay.executor.submitter as _submitter

_real = _submitter.task_messages


def _stamped(*args, **kwargs):
    messages = _real(*args, **kwargs)
    for message in messages:
        message.python_version = {version!r}
    return messages
"""
#: What the 3.13 SDK's script runs; in this process monkeypatch installs `_stamped` (and
#: removes it after the test: assigned here, it would stay for the rest of the session).
INSTALL = "\n_submitter.task_messages = _stamped\n"


def stamp(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    import fnrelay.executor.submitter as submitter

    # A stamp left from an earlier test would give every later task of the session its version.
    assert submitter.task_messages.__name__ == "task_messages", "a stamp was left installed"
    namespace: dict[str, object] = {}
    exec(STAMP.format(version=version), namespace)  # noqa: S102 - the same code as the 3.13 SDK's
    monkeypatch.setattr("fnrelay.executor.submitter.task_messages", namespace["_stamped"])


def run_as(monkeypatch, client, endpoint_id: str, version: str):  # type: ignore[no-untyped-def]
    stamp(monkeypatch, version)
    # The stamp is on the direct path's messages: wait for its connection (until then, the
    # Executor sends over REST with this process's own version).
    with direct_ready(Executor(endpoint_id=endpoint_id, client=client)) as ex:
        future = ex.submit(platform.python_version_tuple)
        value = future.result(timeout=180)
    monkeypatch.undo()
    return value, client.task_record(future.task_id)


def test_local_workers_run_tasks_on_the_submitters_version(make_endpoint, client, python_venv,
                                                          monkeypatch) -> None:
    py313, py310 = python_venv("3.13"), python_venv("3.10")
    ep = make_endpoint("pythons", engine={"python_interpreters": {"3.13": py313,
                                                                  "3.10": py310}})
    for version, python in (("3.13", py313), ("3.10", py310)):
        value, record = run_as(monkeypatch, client, ep.endpoint_id, version)
        assert ".".join(value) == FULL[version]
        # The task's history names the interpreter that ran it.
        assert record["details"]["python"] == python
        assert record["details"]["python_version"] == FULL[version]
    # The endpoint's status lists the versions it runs (its own, 3.11, among them).
    status = wait_for(lambda: (s := client.get_endpoint_status(ep.endpoint_id))
                      and "python_versions" in (s.get("details") or {}) and s,
                      "a heartbeat with python_versions", 30)
    assert status["details"]["python_versions"] == ["3.10", "3.11", "3.13"]


def test_a_slurm_job_runs_on_the_interpreter_of_its_tasks_version(
        slurm_cluster, make_endpoint, client, python_venv, monkeypatch) -> None:
    py313 = python_venv("3.13")
    ep = make_endpoint("slurm-pythons",
                       engine={**SLURM_ENGINE, "python_interpreters": {"3.13": py313}})
    value, record = run_as(monkeypatch, client, ep.endpoint_id, "3.13")
    assert ".".join(value) == FULL["3.13"]
    assert record["details"]["python"] == py313


def test_a_slurm_job_runs_in_an_environment_made_from_the_interpreter_of_its_version(
        slurm_cluster, make_endpoint, client, wheelhouse, monkeypatch) -> None:
    ep = make_endpoint("slurm-envs", engine={
        **SLURM_ENGINE, "python_interpreters": {"3.12": interpreter("3.12")},
        "python_environments": {"fnrelay": "fnrelay", "find_links": [wheelhouse]}})
    value, record = run_as(monkeypatch, client, ep.endpoint_id, "3.12")
    assert ".".join(value) == FULL["3.12"]
    python = record["details"]["python"]
    assert python.startswith(str(ep.home)) and "/python_envs/py3.12-" in python


SUBMITTER = STAMP + INSTALL + """
import sys

from fnrelay import Client, Executor

client = Client(sys.argv[1], sys.argv[2])
offset = 2
# A lambda of __main__ travels as this interpreter's bytecode: only 3.13 can load it.
with Executor(endpoint_id=sys.argv[3], client=client) as ex:
    print(ex.submit(lambda: (sys.version_info[:2], offset)).result(timeout=180))
"""


def test_bytecode_from_a_313_submitter_runs_because_the_endpoint_has_313(
        make_endpoint, broker_url, alice_token, python_venv, tmp_path) -> None:
    ep = make_endpoint("pythons-313", engine={"python_interpreters": {
        "3.13": python_venv("3.13")}})
    script = tmp_path / "submit.py"
    script.write_text(textwrap.dedent(SUBMITTER.format(version="3.13")))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([python_venv("3.13", sdk=True), str(script), broker_url, alice_token,
                           ep.endpoint_id], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "((3, 13), 2)"


def test_start_refuses_an_interpreter_filed_under_another_version_in_one_line(
        make_endpoint, python_venv) -> None:
    py313 = python_venv("3.13")
    ep = make_endpoint("pythons-wrong", start=False,
                       engine={"python_interpreters": {"3.12": py313}})
    out = ep.cli("start", ep.name, "--foreground", timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert f"'engine.python_interpreters.3.12': {py313} is Python 3.13.0, not 3.12" in last
    assert "Traceback" not in out.stderr
