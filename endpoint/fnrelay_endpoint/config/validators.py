"""One check per kind of setting, shared by the endpoint config and every engine's settings.

Each takes the value, the key as the file spells it (``prefetch``, ``engine.max_workers``) and
the source (the file's path), and returns the value normalized or raises ConfigurationError
naming both: ``config.yaml: 'engine.max_workers' must be a positive integer, got 0``. An admin
reads the same sentence for the same mistake whichever engine or section it is in.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Iterable
from typing import Any

from fnrelay.errors import ConfigurationError


def refuse(source: str, key: str, why: str, value: Any) -> ConfigurationError:
    """The error for `value` of `key`: ``<source>: '<key>' <why>, got <value>``."""
    return ConfigurationError(f"{source}: {key!r} {why}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(value: Any, key: str, source: str, low: int = 0, high: int | None = None,
            unit: str = "", why: str = "") -> int:
    """An int from `low` (and up to `high`); `unit` names what it counts, `why` adds what the
    bound protects."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        if unit:
            text = f"must be a number of {unit} ({low} or more)"
        elif high is not None:
            text = f"must be an integer from {low} to {high}"
        elif low == 1:
            text = "must be a positive integer"
        else:
            text = f"must be an integer >= {low}"
        raise refuse(source, key, text + (f" ({why})" if why else ""), value)
    return int(value)


def seconds(value: Any, key: str, source: str) -> float:
    """A positive number of seconds."""
    if not _is_number(value) or value <= 0:
        raise refuse(source, key, "must be a positive number of seconds", value)
    return float(value)


def seconds_or_null(value: Any, key: str, source: str, null: str) -> float | None:
    """A positive number of seconds, or None, which means what `null` says."""
    if value is None:
        return None
    if not _is_number(value) or value <= 0:
        raise refuse(source, key, f"must be a positive number of seconds or null ({null})",
                     value)
    return float(value)


def one_of(value: Any, key: str, source: str, choices: Iterable[str]) -> str:
    """One of `choices` (listed in the error in the given order)."""
    choices = tuple(choices)
    if value not in choices:
        raise refuse(source, key, f"must be one of {', '.join(choices)}", value)
    return str(value)


def interpreter(value: Any, key: str, source: str, here: bool = False) -> str:
    """The path of a Python interpreter: one line of text; with `here`, an executable file on
    this host (or a command name found on PATH).

    `here` is for interpreters the endpoint's own file systems hold (a batch job's worker), so
    that a wrong path fails `fnrelay-endpoint start` at once rather than every task in a job's
    stderr; a Parsl worker's `python` may exist only after its `worker_init` on a compute node.
    """
    if not isinstance(value, str) or not value or any(ch in value for ch in "\n\r\x00"):
        raise refuse(source, key, "must be the path of a Python interpreter", value)
    if not here:
        return value
    found = value if "/" in value else shutil.which(value)
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise ConfigurationError(f"{source}: {key!r}: no Python interpreter at {value!r} "
                                 "(not an executable file)")
    return value


def known_keys(data: Collection[str], known: Collection[str], source: str,
               prefix: str = "", what: str = "") -> None:
    """Refuse the first key of `data` not in `known`, naming it and listing the known ones."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f" for {what}" if what else ""
        raise ConfigurationError(f"{source}: unknown key {prefix + unknown[0]!r}{where} "
                                 f"(known: {', '.join(sorted(known))})")


def subset(value: Any, key: str, source: str, choices: Collection[str]) -> frozenset[str]:
    """A list of some of `choices` (null or missing: none)."""
    value = value or []
    if not isinstance(value, (list, tuple)) or not set(value) <= set(choices):
        raise refuse(source, key, f"must be a list of {', '.join(sorted(choices))}", value)
    return frozenset(value)
