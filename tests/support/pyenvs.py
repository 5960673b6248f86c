"""SDK environments on other CPython versions (pyenv's), built once and cached.

Each holds the SDK's dependencies (pyproject's `dependencies`, plus IPython where a notebook is
simulated); the SDK itself comes from the checkout under test through PYTHONPATH, so the
code that runs is the code being tested. The cache is keyed by the pyproject's hash: a
changed dependency list builds new environments, repeated runs reuse them. A missing
interpreter fails the test (these machines carry them), it never skips.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import subprocess
from pathlib import Path

import tomllib

from support.file_lock import file_lock

ROOT = Path(__file__).resolve().parents[2]
PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
#: The interpreters the matrix submits from (the endpoints of the normal stack run 3.11).
VERSIONS = {"3.10": "3.10.13", "3.12": "3.12.1", "3.13": "3.13.0"}
#: Which of them also gets IPython, for the notebook case.
NOTEBOOK = "3.13"
ENV_CACHE = "FNRELAY_PYENV_CACHE"


def cache_dir() -> Path:
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    key = hashlib.sha256(pyproject).hexdigest()[:16]
    return Path(os.environ.get(ENV_CACHE) or "/tmp/fnrelay-pyenvs") / key


def _requirements(version: str) -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        deps = list(tomllib.load(f)["project"]["dependencies"])
    return deps + (["ipython"] if version == NOTEBOOK else [])


def interpreter(version: str) -> Path:
    """The pyenv CPython of `version` ("3.12"); AssertionError if this machine lacks it."""
    python = PYENV / VERSIONS[version] / "bin" / "python"
    assert python.exists(), f"{python} is missing: install CPython {VERSIONS[version]} (pyenv)"
    return python


def sdk_env(version: str) -> Path:
    """The python of a cached venv of `version` with the SDK's dependencies (built if
    missing; a lock keeps two sessions from building one at once)."""
    target = cache_dir() / version
    python = target / "bin" / "python"
    ready = target / ".fnrelay-ready"
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{version}.lock"):
        if not ready.exists():
            subprocess.run([str(interpreter(version)), "-m", "venv", "--clear", str(target)],
                           check=True, capture_output=True)
            out = subprocess.run([str(python), "-m", "pip", "install", "-q",
                                  *_requirements(version)],
                                 capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, f"pip install for {version} failed:\n{out.stderr}"
            ready.write_text(" ".join(_requirements(version)))
    return python


def sdk_envs(versions: list[str]) -> dict[str, Path]:
    """`sdk_env` of each version, built in parallel (pip mostly waits on I/O)."""
    with cf.ThreadPoolExecutor(len(versions)) as pool:
        return dict(zip(versions, pool.map(sdk_env, versions), strict=True))


def sdk_pythonpath() -> str:
    """PYTHONPATH that gives a foreign interpreter the checkout's SDK (nothing else: the
    broker and endpoint packages need 3.11's venv)."""
    return str(ROOT / "sdk")
