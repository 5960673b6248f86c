"""The Python interpreters an endpoint runs tasks on: its own, and one per minor version named
in the engine's ``python_interpreters`` (``{"3.12": /opt/python3.12/bin/python3.12}``).

A task names its submitter's version (`TaskMessage.python_version`); code serialized there (a
function's bytecode, a pickle of a newer protocol) loads best, or only, on the same minor
version. A task whose version the endpoint lacks, or that names none, runs on the endpoint's own.
Each configured interpreter is run once when the engine starts: a path that is not the version
it is filed under would otherwise fail every task sent to it, in a worker, one at a time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.config import validators as check

KEY = "python_interpreters"
_VERSION = re.compile(r"^3\.(\d{1,2})$")
#: Seconds an interpreter may take to print its version (a cold network file system is slow).
PROBE_TIMEOUT = 60.0
_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3])"


def minor(full: str) -> str:
    """ "3.12.1" -> "3.12"."""
    return ".".join(full.split(".")[:2])


def version_key(version: str) -> tuple[int, ...]:
    """Numeric order: 3.9 before 3.10."""
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class Interpreter:
    """One Python a task may run on: its path and its full version ("3.12.1")."""

    path: str
    full_version: str

    @property
    def version(self) -> str:
        return minor(self.full_version)

    def describe(self) -> dict[str, str]:
        """What a task's history records of the interpreter that ran it."""
        return {"python": self.path, "python_version": self.full_version}


def own() -> Interpreter:
    """The endpoint's own interpreter (its workers' by default)."""
    return Interpreter(sys.executable, ".".join(map(str, sys.version_info[:3])))


def validate(value: Any, source: str) -> dict[str, str]:
    """The ``engine.python_interpreters`` mapping, checked for shape: "3.N" keys, absolute paths
    of executable files. Not run here: `EndpointConfig` is loaded by commands that start
    nothing (list, configure); `probe_all` runs them when the engine starts."""
    key = f"engine.{KEY}"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise check.refuse(source, key, 'must map Python versions to interpreter paths, e.g. '
                           '{"3.12": /usr/bin/python3.12}', value)
    paths: dict[str, str] = {}
    for version, path in value.items():
        text = str(version)  # YAML reads 3.12 as a float and 3.10 as 3.1: ask for quotes
        if not isinstance(version, str) or not _VERSION.match(text):
            raise ConfigurationError(
                f"{source}: {key!r}: the version {version!r} must be a quoted "
                f'"major.minor" such as "3.12" (YAML reads 3.10 unquoted as 3.1)')
        check.interpreter(path, f"{key}.{text}", source, here=True)
        if not os.path.isabs(path):
            raise ConfigurationError(f"{source}: {key!r}: the interpreter for {text} must be "
                                     f"an absolute path, got {path!r}")
        paths[text] = path
    return paths


#: Variables of the endpoint's own environment that would point another version at its
#: modules (its workers there go without them too).
NOT_PASSED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


def foreign_env() -> dict[str, str]:
    """The environment of a process on another interpreter than the endpoint's."""
    return {k: v for k, v in os.environ.items() if k not in NOT_PASSED}


def probe(path: str, needs: str = "") -> str:
    """The full version ("3.12.1") that the interpreter at `path` reports when run; with
    `needs`, it must also import that module (what its workers run)."""
    script = (f"import {needs}; " if needs else "") + _PROBE
    try:
        done = subprocess.run([path, "-c", script], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, check=False, env=foreign_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigurationError(f"cannot run the Python interpreter {path}: {e}") from None
    out = done.stdout.strip()
    if done.returncode != 0 or not re.fullmatch(r"\d+\.\d+\.\d+", out):
        why = (done.stderr.strip().splitlines() or [out or f"exit code {done.returncode}"])[-1]
        if needs and "ModuleNotFoundError" in why:
            raise ConfigurationError(f"{path} cannot run fnrelay's workers ({why}): install "
                                     "fnrelay and dill in its environment, or set "
                                     "engine.python_environments")
        raise ConfigurationError(f"{path} is not a working Python interpreter: {why}")
    return out


def probe_all(paths: Mapping[str, str], needs: str = "") -> dict[str, Interpreter]:
    """The configured interpreters by minor version, each run once to check it is the version
    it is filed under (and imports `needs`)."""
    found: dict[str, Interpreter] = {}
    for version, path in paths.items():
        try:
            full = probe(path, needs)
        except ConfigurationError as e:
            raise ConfigurationError(f"'engine.{KEY}.{version}': {e}") from None
        if minor(full) != version:
            raise ConfigurationError(
                f"'engine.{KEY}.{version}': {path} is Python {full}, not {version}")
        found[version] = Interpreter(path, full)
    return found


class Interpreters:
    """Which interpreter runs which task: the configured one of the task's version, else the
    endpoint's own."""

    def __init__(self, configured: Mapping[str, Interpreter], default: Interpreter | None = None):
        self.default = default or own()
        #: Other versions than the default's (the default's version runs on the default).
        self.others = {v: i for v, i in configured.items() if v != self.default.version}

    @classmethod
    def start(cls, paths: Mapping[str, str], default: Interpreter | None = None,
              needs: str = "") -> Interpreters:
        return cls(probe_all(paths, needs), default)

    def for_version(self, version: str | None) -> Interpreter:
        return self.others.get(version or "", self.default)

    def versions(self) -> list[str]:
        """The versions tasks can run on, sorted (the heartbeat's ``python_versions``)."""
        return sorted({self.default.version, *self.others}, key=version_key)
