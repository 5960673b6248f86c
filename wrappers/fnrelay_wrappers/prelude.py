"""Job prelude lines that run before the command: module loads and the admin's pre-exec text.

Module names are quoted (they are names); pre-exec lines are shell by design, so they come only
from the endpoint's config (the resource specification refuses them per task unless allowed),
and here are only checked to be single lines.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable


def lines_of(text: str | Iterable[str] | None, what: str) -> list[str]:
    """A list of single lines from a string (split at newlines) or a list of strings."""
    if text is None:
        return []
    if isinstance(text, str):
        return [line for line in text.splitlines() if line.strip()]
    result = []
    for line in text:
        if not isinstance(line, str) or "\n" in line or "\r" in line:
            raise ValueError(f"each {what} entry must be one line of text, not {line!r}")
        if line.strip():
            result.append(line)
    return result


def module_lines(modules: Iterable[str] | None) -> list[str]:
    """``module load NAME`` per module, names quoted."""
    names = lines_of(modules, "modules")
    return [f"module load {shlex.quote(name.strip())}" for name in names]


def pre_exec_lines(pre_exec: str | Iterable[str] | None) -> list[str]:
    """The admin's pre-exec shell lines, unchanged."""
    return lines_of(pre_exec, "pre_exec")
