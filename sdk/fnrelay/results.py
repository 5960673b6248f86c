"""Turning a task's recorded outcome back into a value or a raised exception.

Shared by Client.get_result (REST task records) and the Executor (AMQP result messages), so
both re-create remote exceptions and warn about version mismatches the same way.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from fnrelay import serialize
from fnrelay.errors import SerializationError, TaskCancelled, TaskExecutionFailed
from fnrelay.wire import ExceptionInfo, TaskState

_warned = False
_warn_lock = threading.Lock()


def check_versions(details: dict[str, Any] | None) -> None:
    """Warn once per process when the worker's Python (major.minor) or dill differs from ours."""
    global _warned
    if _warned or not details:
        return
    local = serialize.versions()
    remote_py = str(details.get("python_version") or "")
    remote_dill = str(details.get("dill_version") or "")
    problems = []
    if remote_py and _major_minor(remote_py) != _major_minor(local["python_version"]):
        problems.append(f"Python {remote_py} (here {local['python_version']})")
    if remote_dill and remote_dill != local["dill_version"]:
        problems.append(f"dill {remote_dill} (here {local['dill_version']})")
    if not problems:
        return
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        "the endpoint's worker runs " + " and ".join(problems)
        + "; functions and values may fail to (de)serialize. Use matching versions.",
        RuntimeWarning,
        stacklevel=3,
    )


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def recreate_exception(
    info: ExceptionInfo | dict[str, Any], task_id: str | None = None
) -> BaseException:
    """The remote exception object where it can be rebuilt, else TaskExecutionFailed.

    Either way it carries ``remote_traceback`` (and, on Python 3.11+, a note with it, so a
    traceback printed locally shows where it failed remotely).
    """
    if isinstance(info, dict):
        info = ExceptionInfo.from_dict(info)
    tb = info.traceback or ""
    exc: BaseException | None = None
    if info.serialized:
        try:
            candidate = serialize.deserialize(info.serialized)
        except SerializationError:
            candidate = None
        if isinstance(candidate, BaseException):
            exc = candidate
    if exc is None:
        return TaskExecutionFailed(f"{info.type}: {info.message}", tb, task_id)
    try:
        exc.remote_traceback = tb  # type: ignore[attr-defined]  # added to any exception
        exc.task_id = task_id  # type: ignore[attr-defined]  # added to any exception
    except (AttributeError, TypeError):  # exceptions with __slots__
        return TaskExecutionFailed(f"{info.type}: {info.message}", tb, task_id)
    if tb and hasattr(exc, "add_note"):
        exc.add_note(f"Remote traceback (task {task_id}):\n{tb.rstrip()}")
    return exc


def outcome(
    task_id: str, status: str, result: str | None, exception: Any, details: dict | None
) -> tuple[bool, Any]:
    """(ok, value): the deserialized value, or the exception to raise for this terminal task."""
    check_versions(details)
    if status == TaskState.SUCCESS.value:
        return True, serialize.deserialize(result) if result is not None else None
    if status == TaskState.CANCELLED.value:
        return False, TaskCancelled(task_id)
    if exception:
        return False, recreate_exception(exception, task_id)
    return False, TaskExecutionFailed(f"task {task_id} failed without an exception", "", task_id)
