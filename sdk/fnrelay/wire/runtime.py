"""`user_runtime`: what the submitting SDK says about itself, as Globus Compute's templates read
it (`_GC.user_runtime`; docs/globus-compute.md).

GC's default template builds a worker venv from it (`uv venv --python <python.version_tuple>`,
`uv pip install globus-compute-endpoint==<globus_compute_sdk_version>`), so it is checked
where it enters: any tenant writes it, it travels with every start command, and a template
renders it into shell text.
"""

from __future__ import annotations

import functools
import platform
import re
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from fnrelay.wire.codec import WireError
from fnrelay.wire.pyversion import major_minor

#: Characters of one text value (`sys.version` is about 100; a platform string about 60).
MAX_TEXT = 160
#: A version string: PEP 440's characters, bounded; the whole string (fullmatch).
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_-]{0,63}")
#: Top-level keys that are versions; GC's default template writes one into a shell command.
_VERSIONS = ("globus_compute_sdk_version", "globus_sdk_version", "fnrelay_version")
_PYTHON_TEXT = ("version_description", "implementation", "compiler")
_PLATFORM_TEXT = ("machine", "node", "platform", "processor", "release")


def check(value: Any, what: str = "user_runtime") -> dict[str, Any]:
    """The known fields of `value` (GC SDK's `UserRuntime`: versions, `python`, `platform`),
    each checked; WireError if one is malformed; other keys dropped (None: empty).

    Only known fields are kept so that a task's stored copy stays small (every task of a
    submission keeps one) and a template can read nothing but these. Each is checked before
    anything walks it, so a huge value costs one type or length test.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(f"{what!r} must be an object, not {type(value).__name__}")
    out: dict[str, Any] = {}
    for key in _VERSIONS:
        _put(out, key, value.get(key), f"{what}.{key}", _version_text)
    _put(out, "python_version", value.get("python_version"), f"{what}.python_version", _text)
    _put(out, "python", value.get("python"), f"{what}.python", _python_info)
    _put(out, "platform", value.get("platform"), f"{what}.platform", _platform_info)
    return out


def _put(out: dict[str, Any], key: str, found: Any, where: str,
         checked: Callable[[Any, str], Any]) -> None:
    if found is not None:
        out[key] = checked(found, where)


def _object(found: Any, where: str) -> dict[str, Any]:
    if not isinstance(found, dict):
        raise WireError(f"{where!r} must be an object")
    return found


def _text(found: Any, where: str) -> str:
    """Free text (a version description, a compiler, a host name): bounded, on one line."""
    if not isinstance(found, str) or len(found) > MAX_TEXT or not found.isprintable():
        raise WireError(f"{where!r} must be one line of text of at most {MAX_TEXT} characters")
    return found


def _version_text(found: Any, where: str) -> str:
    if not (isinstance(found, str) and _VERSION.fullmatch(found)):
        raise WireError(f"{where!r} must be a version (letters, digits and .+!_-)")
    return found


def _ints(found: Any, where: str, most: int) -> list[int]:
    if not isinstance(found, list) or len(found) > most or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 10_000 for p in found):
        raise WireError(f"{where!r} must be a list of at most {most} small integers")
    return found


def _python_info(found: Any, where: str) -> dict[str, Any]:
    python, out = _object(found, where), dict[str, Any]()
    _put(out, "version", python.get("version"), f"{where}.version", _version_text)
    for key in _PYTHON_TEXT:
        _put(out, key, python.get(key), f"{where}.{key}", _text)
    _put(out, "version_tuple", python.get("version_tuple"), f"{where}.version_tuple",
         lambda v, w: _ints(v, w, 3))
    _put(out, "version_info", python.get("version_info"), f"{where}.version_info",
         _version_info)
    return out


def _version_info(found: Any, where: str) -> list[Any]:
    """`tuple(sys.version_info)`: three numbers, the release level, the serial."""
    if not isinstance(found, list) or len(found) != 5:
        raise WireError(f"{where!r} must be sys.version_info's five fields")
    _ints([found[0], found[1], found[2], found[4]], where, 4)
    return [*found[:3], _version_text(found[3], where), found[4]]


def _platform_info(found: Any, where: str) -> dict[str, Any]:
    host, out = _object(found, where), dict[str, Any]()
    for key in _PLATFORM_TEXT:
        _put(out, key, host.get(key), f"{where}.{key}", _text)
    arch = host.get("architecture")
    if arch is not None:
        if not isinstance(arch, list) or len(arch) > 2:
            raise WireError(f"'{where}.architecture' must be a list of two texts")
        out["architecture"] = [_text(a, f"{where}.architecture") for a in arch]
    return out


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
