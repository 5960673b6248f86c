"""An Executor's own function registry: which function id each callable is submitted as.

Globus Compute's Executor keeps one, so ``register_function(fn, function_id=...)`` can bind a
callable to an id registered earlier, and a second, different registration of the same
callable is caught. The Client's cache (by content) stays underneath it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class FunctionRegistry:
    """Function ids by callable: by the callable itself where it is hashable, else by its id()
    (the callable is then kept alive with it, so the id cannot be reused)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_fn: dict[Any, str] = {}
        self._by_id: dict[int, tuple[Callable[..., Any], str]] = {}

    def get(self, fn: Callable[..., Any]) -> str | None:
        with self._lock:
            try:
                return self._by_fn.get(fn)
            except TypeError:  # unhashable
                kept = self._by_id.get(id(fn))
                return kept[1] if kept else None

    def add(self, fn: Callable[..., Any], function_id: str) -> str:
        """Record `fn` as `function_id`; the id it has if another thread recorded it first."""
        with self._lock:
            try:
                return self._by_fn.setdefault(fn, function_id)
            except TypeError:
                return self._by_id.setdefault(id(fn), (fn, function_id))[1]
