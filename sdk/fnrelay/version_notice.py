"""The warning that a call crosses Python versions, once per endpoint and version pair.

Endpoints report the versions they run in their heartbeat (the status's ``details``:
``python_versions``, else their own ``python_version``). A submitter on another minor version
is told before anything fails: its functions travel as source and cross over, but a function
without source cannot (`PythonVersionMismatch`), and arguments and results must unpickle on
both sides.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from fnrelay.errors import PythonVersionWarning
from fnrelay.wire import pyversion

_lock = threading.Lock()
_warned: set[tuple[str, str, tuple[str, ...]]] = set()


def endpoint_versions(status: Any) -> list[str]:
    """The "major.minor" versions an endpoint's status says it runs (empty: unknown)."""
    details = status.get("details") if isinstance(status, dict) else None
    if not isinstance(details, dict):
        return []
    listed = details.get("python_versions")
    if isinstance(listed, list):
        found = [v for v in map(pyversion.major_minor, listed) if v]
        if found:
            return sorted(set(found))
    own = pyversion.major_minor(details.get("python_version"))
    return [own] if own else []


def notice(endpoint_id: str, status: Any) -> bool:
    """Warn (PythonVersionWarning) if this interpreter's version is not among the endpoint's,
    once per endpoint and version pair in this process; True if it warned now."""
    theirs = tuple(endpoint_versions(status))
    here = pyversion.here()
    if not theirs or here in theirs:
        return False
    key = (str(endpoint_id), here, theirs)
    with _lock:
        if key in _warned:
            return False
        _warned.add(key)
    warnings.warn(
        f"endpoint {endpoint_id} runs Python {', '.join(theirs)} and this SDK runs Python "
        f"{here}: functions travel as source and cross versions, but one whose source is not "
        "available travels as bytecode and fails there (PythonVersionMismatch), and "
        "arguments and results must unpickle on both sides (same package versions); see "
        "docs/python-versions.md", PythonVersionWarning, stacklevel=3)
    return True
