"""The machine's other CPython versions (pyenv), and virtual environments on them that hold
this checkout's fnrelay: made once per test session with uv, shared by every test that asks.

A missing interpreter fails the test that needs it (the suite's machines carry 3.10 to 3.13).
"""

from __future__ import annotations

import hashlib
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import fnrelay_endpoint
from fnrelay import serialize
from fnrelay.wire import ResultMessage, StatusUpdate, TaskMessage, TaskState, new_id
from fnrelay_endpoint.config.model import EndpointConfig
from fnrelay_endpoint.engines.local.engine import LocalEngine
from support.file_lock import file_lock

PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
#: Full versions under pyenv, by the minor version the tests name.
FULL = {"3.10": "3.10.13", "3.12": "3.12.1", "3.13": "3.13.0"}
#: The checkout under test (an editable install of it follows every edit).
ROOT = Path(fnrelay_endpoint.__file__).resolve().parents[2]

WAIT = 60.0  # an upper bound for things to happen, not a timing assertion
#: The minor version of the endpoints under test (the suite's own interpreter).
OWN = f"{sys.version_info[0]}.{sys.version_info[1]}"

_lock = threading.Lock()
_made: dict[tuple[str, bool, bool], Path] = {}


def building_from_the_checkout() -> AbstractContextManager[None]:
    """Held while pip or uv builds from this checkout: they write build/ and fnrelay.egg-info
    inside it, so another pytest worker (or test run) building meanwhile waits its turn."""
    tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return file_lock(Path(tempfile.gettempdir()) / f"fnrelay-build-{tag}.lock")


def interpreter(version: str) -> str:
    """The pyenv interpreter of `version` ("3.13"); AssertionError if the machine lacks it."""
    path = PYENV / FULL[version] / "bin" / f"python{version}"
    assert path.is_file(), f"Python {version} is missing at {path}: install it with pyenv"
    return str(path)


def uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def run_uv(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    done = subprocess.run([uv(), *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"uv {' '.join(args)} failed: {done.stderr}"


def venv(version: str, root: Path, sdk: bool = False, parsl: bool = False) -> str:
    """The python of a venv on `version` holding this checkout's fnrelay (editable) and dill;
    with `sdk`, its client dependencies too (to submit from it); with `parsl`, the Parsl of
    this venv (its interchange refuses another Parsl). Made once per `root`."""
    with _lock:
        key = (version, sdk, parsl)
        if key not in _made:
            where = root / f"py{version}{'-sdk' if sdk else ''}{'-parsl' if parsl else ''}"
            run_uv("venv", "-q", "--python", interpreter(version), str(where))
            python = str(where / "bin" / "python")
            with building_from_the_checkout():
                if sdk:
                    run_uv("pip", "install", "-q", "--python", python, "-e", str(ROOT))
                else:
                    run_uv("pip", "install", "-q", "--python", python, "--no-deps", "-e",
                           str(ROOT))
                extra = [f"parsl=={_version('parsl')}"] if parsl else []
                run_uv("pip", "install", "-q", "--python", python, "dill", *extra)
            _made[key] = where
        return str(_made[key] / "bin" / "python")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def wheelhouse(root: Path) -> Path:
    """A find-links directory with this checkout's fnrelay wheel and dill's: what an admin
    serves environments from, without an index."""
    import dill

    where = root / "wheelhouse"
    with _lock, building_from_the_checkout():
        if not (where / ".complete").exists():
            where.mkdir(parents=True, exist_ok=True)
            for args in (["wheel", "--no-deps", "--no-build-isolation", "-w", str(where),
                          str(ROOT)],
                         ["download", "--no-deps", "-d", str(where), f"dill=={dill.__version__}"]):
                done = subprocess.run([sys.executable, "-m", "pip", "-q", *args],
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"pip {args[0]} failed: {done.stderr}"
            (where / ".complete").touch()
    return where


def version_task(python_version: str | None, **fields: Any) -> TaskMessage:
    """A task returning the version of the interpreter it runs on (a stdlib function, which
    travels by reference and so loads on any version)."""
    return TaskMessage(task_id=new_id(), function_id=new_id(),
                       function=serialize.serialize_function(platform.python_version_tuple),
                       payload=serialize.serialize_args((), {}), python_version=python_version,
                       **fields)


class Engine:
    """A local engine from an endpoint config's `engine` mapping, and what it reports."""

    def __init__(self, engine: dict[str, Any], workdir: Path):
        config = EndpointConfig.from_dict({"broker_url": "http://localhost",
                                           "engine": {"type": "local", **engine}})
        self.results: queue.Queue[ResultMessage] = queue.Queue()
        self.updates: queue.Queue[StatusUpdate] = queue.Queue()
        self.engine = LocalEngine.from_config(config.engine, workdir, self.results.put,
                                              self.updates.put)
        self.engine.start()

    def run(self, *tasks: TaskMessage) -> dict[str, ResultMessage]:
        for task in tasks:
            self.engine.submit(task)
        got = [self.results.get(timeout=WAIT) for _ in tasks]
        return {r.task_id: r for r in got}


def ran_on(result: ResultMessage) -> str:
    assert result.status == TaskState.SUCCESS.value, result.exception
    version = ".".join(serialize.deserialize(result.result or "")[:2])
    assert result.details["python_version"].startswith(version + ".")
    return version
