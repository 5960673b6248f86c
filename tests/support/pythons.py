"""The machine's other CPython versions (pyenv), and virtual environments on them that hold
this checkout's fnrelay: made once per test session with uv, shared by every test that asks.

A missing interpreter fails the test that needs it (the suite's machines carry 3.10 to 3.13).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import fnrelay_endpoint

PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
#: Full versions under pyenv, by the minor version the tests name.
FULL = {"3.10": "3.10.13", "3.12": "3.12.1", "3.13": "3.13.0"}
#: The checkout under test (an editable install of it follows every edit).
ROOT = Path(fnrelay_endpoint.__file__).resolve().parents[2]

_lock = threading.Lock()
_made: dict[tuple[str, bool], Path] = {}


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


def venv(version: str, root: Path, sdk: bool = False) -> str:
    """The python of a venv on `version` holding this checkout's fnrelay (editable) and dill;
    with `sdk`, its client dependencies too (to submit from it). Made once per `root`."""
    with _lock:
        key = (version, sdk)
        if key not in _made:
            where = root / f"py{version}{'-sdk' if sdk else ''}"
            run_uv("venv", "-q", "--python", interpreter(version), str(where))
            python = str(where / "bin" / "python")
            if sdk:
                run_uv("pip", "install", "-q", "--python", python, "-e", str(ROOT))
            else:
                run_uv("pip", "install", "-q", "--python", python, "--no-deps", "-e",
                       str(ROOT))
                run_uv("pip", "install", "-q", "--python", python, "dill")
            _made[key] = where
        return str(_made[key] / "bin" / "python")
