"""The parsl engine keeps an executor per configured Python version: its interchange and its
worker pools run on that interpreter (real Parsl, local provider)."""

from __future__ import annotations

import platform
import queue
from pathlib import Path

from fnrelay import serialize
from fnrelay.errors import ConfigurationError
from fnrelay.wire import ResultMessage, TaskState
from fnrelay_endpoint.engines.parsl.engine import ParslEngine
from support.pythons import FULL, OWN, WAIT, interpreter, version_task

FAST = {"type": "parsl", "provider": "local", "max_workers_per_node": 1, "heartbeat_period": 1,
        "heartbeat_threshold": 4, "strategy_period": 0.5, "poll_period": 1, "max_idletime": 30}


def test_tasks_run_on_the_executor_of_their_version(python_venv, tmp_path: Path) -> None:
    py313 = python_venv("3.13", parsl=True)
    results: queue.Queue[ResultMessage] = queue.Queue()
    engine = ParslEngine({**FAST, "python_interpreters": {"3.13": py313}}, tmp_path,
                         results.put, lambda update: None)
    engine.start()
    try:
        tasks = {v: version_task(v) for v in ("3.13", None)}
        for task in tasks.values():
            engine.submit(task)
        got = {r.task_id: r for r in (results.get(timeout=WAIT * 2) for _ in tasks)}
        ran = {}
        for version, task in tasks.items():
            result = got[task.task_id]
            assert result.status == TaskState.SUCCESS.value, result.exception
            ran[version] = ".".join(serialize.deserialize(result.result or ""))
        assert ran == {"3.13": FULL["3.13"], None: platform.python_version()}
        assert got[tasks["3.13"].task_id].details["python"] == py313
        assert engine.info()["python_versions"] == [OWN, "3.13"]
    finally:
        engine.shutdown()


def test_an_interpreter_without_parsl_is_refused_at_start(tmp_path: Path) -> None:
    bare = interpreter("3.12")
    try:
        ParslEngine({**FAST, "python_interpreters": {"3.12": bare}}, tmp_path, print, print)
    except ConfigurationError as e:
        assert "No module named 'parsl'" in str(e) and "\n" not in str(e)
    else:
        raise AssertionError("a 3.12 interpreter without Parsl was accepted")
