"""`user_runtime`: what the submitting SDK says about itself, as Globus Compute's templates read
it (`_GC.user_runtime`; docs/globus-compute.md).

GC's default template builds a worker venv from it (`uv venv --python <python.version_tuple>`,
`uv pip install globus-compute-endpoint==<globus_compute_sdk_version>`), so it is checked
where it enters: any tenant writes it, it travels with every start command, and a template
renders it into shell text.
"""

from __future__ import annotations

import functools
import json
import platform
import re
import sys
from importlib import metadata
from typing import Any

from fnrelay.wire.codec import WireError
from fnrelay.wire.pyversion import major_minor

#: Bytes of its JSON. The official SDK's is about 1 KB; a start command carries one.
MAX_BYTES = 4096
#: Nesting depth (GC's shape is two levels deep).
MAX_DEPTH = 4
#: A version string (PEP 440's characters, bounded).
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+!_-]{0,63}$")


def check(value: Any, what: str = "user_runtime") -> dict[str, Any]:
    """`value` if it is a small JSON object of JSON values (None: empty); WireError else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(f"{what!r} must be an object, not {type(value).__name__}")
    _check_value(value, what, 0)
    _check_known(value, what)
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_BYTES:
        raise WireError(f"{what!r} is {size} bytes of JSON, above the limit of {MAX_BYTES}")
    return value


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise WireError(f"{where!r} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise WireError(f"{where!r} has a key that is not a string")
            _check_value(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]", depth + 1)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise WireError(f"{where!r} holds a {type(value).__name__}, not a JSON value")


def _check_known(value: dict[str, Any], what: str) -> None:
    """The keys endpoints read (GC's core_endpoint and default template) have GC's types, and
    versions look like versions: GC's default template strips the JSON quotes off
    `globus_compute_sdk_version` and writes it into a shell command (`uv pip install
    globus-compute-endpoint==...`), so anything else there would be shell text."""
    if not isinstance(value.get("python_version", ""), str):
        raise WireError(f"'{what}.python_version' must be a string")
    for key in ("globus_compute_sdk_version", "globus_sdk_version", "fnrelay_version"):
        _check_version(value, key, f"{what}.{key}")
    python = value.get("python", {})
    if not isinstance(python, dict):
        raise WireError(f"'{what}.python' must be an object")
    _check_version(python, "version", f"{what}.python.version")
    parts = python.get("version_tuple", [])
    if not isinstance(parts, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in parts):
        raise WireError(f"'{what}.python.version_tuple' must be a list of integers")


def _check_version(item: dict[str, Any], key: str, where: str) -> None:
    found = item.get(key)
    if found is not None and not (isinstance(found, str) and _VERSION.match(found)):
        raise WireError(f"{where!r} must be a version (letters, digits and .+!_-)")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _python() -> dict[str, Any]:
    return {"version": platform.python_version(), "version_description": sys.version,
            "version_tuple": list(sys.version_info[:3]),
            "version_info": [*sys.version_info[:3], sys.version_info[3], sys.version_info[4]],
            "compiler": platform.python_compiler(),
            "implementation": platform.python_implementation()}


@functools.cache
def of_globus_submitter() -> dict[str, Any]:
    """fnrelay's SDK submitting in Globus Compute's format, in the official SDK's shape: the
    versions of the globus-compute-sdk and globus-sdk that serialized the tasks (what a
    worker must match), and this Python. No `platform`: the host name stays here. (Cached:
    the caller must not change it.)"""
    found = {"globus_compute_sdk_version": _version("globus-compute-sdk"),
             "globus_sdk_version": _version("globus-sdk"),
             "fnrelay_version": _version("fnrelay")}
    return {**{k: v for k, v in found.items() if v}, "python_version": sys.version,
            "python": _python()}


def of_native_task(python_version: str | None) -> dict[str, Any]:
    """A task in fnrelay's format: the Python "major.minor" it was serialized on (all the
    broker keeps of it), as `python.version`. Neither `version_tuple` nor a GC SDK version:
    GC's default template keys its worker venv on those, and a venv of globus-compute-endpoint
    would not run fnrelay's tasks."""
    version = major_minor(python_version)
    return {"python_version": version, "python": {"version": version}} if version else {}


def for_task(stored: Any, python_version: str | None) -> dict[str, Any]:
    """What a start command carries for the task that asked for it: what its SDK sent (kept
    in the task's details), else what its fnrelay-format record says. A stored value that
    fails today's check (kept before the broker checked it) is replaced, never sent: the
    manager would refuse the whole start command."""
    if isinstance(stored, dict) and stored:
        try:
            return check(stored)
        except WireError:
            pass
    return of_native_task(python_version)
