"""A Python "major.minor" as tasks carry it (`TaskMessage.python_version`).

Functions serialized as bytecode run only on the minor version that wrote them; patch
releases share bytecode and pickles, so the wire names the minor version alone.
"""

from __future__ import annotations

import re
import sys
from typing import Any

_MAJOR_MINOR = re.compile(r"^\s*(\d+)\.(\d+)")


def here() -> str:
    """This interpreter's "major.minor"."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def major_minor(text: Any) -> str | None:
    """"3.12" of "3.12", "3.12.1" or "3.12.1 (main, ...) [GCC ...]"; None for anything else."""
    if not isinstance(text, str):
        return None
    m = _MAJOR_MINOR.match(text)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def of_user_runtime(runtime: Any) -> str | None:
    """The submitter's version from Globus Compute's `user_runtime` (its `python.version`,
    else its `python_version`, which is `sys.version`)."""
    if not isinstance(runtime, dict):
        return None
    python = runtime.get("python")
    found = major_minor(python.get("version")) if isinstance(python, dict) else None
    return found or major_minor(runtime.get("python_version"))
