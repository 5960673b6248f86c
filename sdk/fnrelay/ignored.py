"""A one-time notice for an option accepted for Globus Compute compatibility that has no
meaning in fnrelay: the call goes on as it would without it, and the user is told once per
process and option, never silently."""

from __future__ import annotations

import threading
import warnings

_told: set[str] = set()
_lock = threading.Lock()


class IgnoredOptionWarning(UserWarning):
    """An option given to fnrelay has no effect here (it exists for Globus Compute code)."""


def ignored(option: str, why: str, stacklevel: int = 3) -> None:
    """Warn once that `option` (e.g. ``Client(environment=)``) is ignored, and why."""
    with _lock:
        if option in _told:
            return
        _told.add(option)
    warnings.warn(f"{option} is ignored by fnrelay: {why}", IgnoredOptionWarning,
                  stacklevel=stacklevel)
