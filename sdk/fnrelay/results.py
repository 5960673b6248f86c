"""Turning a task's recorded outcome back into a value or a raised exception.

Shared by Client.get_result (REST task records) and the Executor (AMQP result messages), so
both re-create remote exceptions and warn about version mismatches the same way.
"""

from __future__ import annotations

import contextlib
import threading
import time
import types
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
    info: ExceptionInfo | dict[str, Any], task_id: str | None = None,
    completion_t: str | float | None = None, details: dict[str, Any] | None = None,
) -> BaseException:
    """The exception a caller gets for a failed task: always a TaskExecutionFailed (what
    Globus Compute code catches), and, where the remote exception could be rebuilt, also an
    instance of its own type (what fnrelay code catches), with its args and attributes.

    Only ``info.serialized`` is unpickled, exactly as before this class existed: combining
    types unpickles nothing more.
    """
    if isinstance(info, dict):
        info = ExceptionInfo.from_dict(info)
    remote_data = _remote_data(info)
    t = _completion_text(completion_t, details)
    original = _rebuilt(info)
    if isinstance(original, TaskExecutionFailed):  # the task itself raised one: it is both
        original.completion_t, original.task_id = t, task_id
        return original
    if original is not None:
        return rebuild(type(original), original.args, _state(original), remote_data, t, details,
                       task_id)
    return TaskExecutionFailed(remote_data, t, details, task_id=task_id)


def _remote_data(info: ExceptionInfo) -> str:
    """GC's `remote_data`: the remote traceback, ending with the type and message when the
    traceback does not say them (the worker's own words, e.g. for a sys.exit())."""
    tb = info.traceback or ""
    if info.message and info.message in tb:
        return tb
    line = f"{info.type}: {info.message}" if info.message else info.type
    return f"{tb.rstrip()}\n{line}\n" if tb else line


def _rebuilt(info: ExceptionInfo) -> Exception | None:
    """The unpickled remote exception; None when it cannot be, or is not an Exception (a
    SystemExit re-raised here would end the caller's program)."""
    if not info.serialized:
        return None
    try:
        candidate = serialize.deserialize(info.serialized)
    except SerializationError:
        return None
    return candidate if isinstance(candidate, Exception) else None


def _completion_text(completion_t: str | float | None, details: dict[str, Any] | None) -> str:
    """GC's `completion_t`: unix time as text; the broker's or worker's time of the end."""
    if completion_t is None and details:
        completion_t = details.get("completed")
    return str(completion_t if completion_t is not None else time.time())


def _state(exc: BaseException) -> dict[str, Any]:
    """What an exception holds besides its args: its __dict__, its __slots__, and the C
    fields builtin exceptions keep attributes in (errno, filename, lineno, start, value)."""
    state = dict(getattr(exc, "__dict__", {}))
    for klass in type(exc).__mro__:
        if not issubclass(klass, BaseException):
            continue
        for name, attr in vars(klass).items():
            if name != "args" and not name.startswith("__") and isinstance(
                    attr, (types.MemberDescriptorType, types.GetSetDescriptorType)):
                with contextlib.suppress(AttributeError):
                    state.setdefault(name, getattr(exc, name))
    return state


#: Combined classes by remote type, so two failures of one type share one class. Bounded:
#: a class the worker pickles by value (defined in __main__) arrives as a new type each time.
_combined: dict[type, type[TaskExecutionFailed] | None] = {}
_combined_lock = threading.Lock()
_COMBINED_MAX = 512


def combined_class(remote: type[BaseException]) -> type[TaskExecutionFailed] | None:
    """A class derived from TaskExecutionFailed and `remote`, named like `remote`; None where
    Python refuses one (a final type, a metaclass conflict, an `__init_subclass__` that
    raises) or `remote` is no Exception."""
    with _combined_lock:
        if remote in _combined:
            return _combined[remote]
    cls = _make_combined(remote)
    with _combined_lock:
        if len(_combined) >= _COMBINED_MAX:
            _combined.clear()
        return _combined.setdefault(remote, cls)


def _make_combined(remote: type[BaseException]) -> type[TaskExecutionFailed] | None:
    if not (isinstance(remote, type) and issubclass(remote, Exception)):
        return None

    def body(ns: dict[str, Any]) -> None:
        ns.update(__module__=remote.__module__, __qualname__=remote.__qualname__,
                  __doc__=remote.__doc__, __str__=TaskExecutionFailed.__str__,
                  __reduce__=_reduce)

    try:
        cls = types.new_class(remote.__name__, (TaskExecutionFailed, remote), exec_body=body)
    except Exception:  # noqa: BLE001 - whatever the type refuses, TaskExecutionFailed remains
        return None
    return cls


def _instance(cls: type[TaskExecutionFailed], args: tuple, state: dict[str, Any],
              remote_data: str, completion_t: str, details: dict[str, Any] | None,
              task_id: str | None) -> TaskExecutionFailed:
    """An instance of `cls` holding the remote exception's args and state, made without
    calling any __init__ (a remote type's may take other arguments than its args)."""
    exc = cls.__new__(cls, *args)
    exc.args = args  # OSError's __new__ keeps them only for its own __init__ to parse
    for name, value in state.items():
        with contextlib.suppress(AttributeError, TypeError):  # a read-only C field
            setattr(exc, name, value)
    exc.remote_data, exc.completion_t, exc.task_details = remote_data, completion_t, details
    exc.task_id = task_id
    return exc


_OWN = ("remote_data", "completion_t", "task_details", "task_id")


def _reduce(self: TaskExecutionFailed) -> tuple[Any, tuple]:
    """Pickle a combined exception as its remote type plus our fields: the class itself was
    made at run time and cannot be found by name."""
    remote = type(self).__bases__[1]  # (TaskExecutionFailed, remote)
    state = {k: v for k, v in _state(self).items() if k not in _OWN}
    return rebuild, (remote, self.args, state, self.remote_data, self.completion_t,
                     self.task_details, self.task_id)


def rebuild(remote: type[BaseException], args: tuple, state: dict[str, Any], remote_data: str,
            completion_t: str, details: dict[str, Any] | None, task_id: str | None
            ) -> TaskExecutionFailed:
    """A combined exception (also how one is unpickled, see _reduce); TaskExecutionFailed
    alone where the remote type refuses a subclass or an instance made this way."""
    cls = combined_class(remote)
    if cls is not None:
        try:
            return _instance(cls, args, state, remote_data, completion_t, details, task_id)
        except Exception:  # noqa: BLE001 - a __new__ of the remote type that refuses
            pass
    return TaskExecutionFailed(remote_data, completion_t, details, task_id=task_id)


def outcome(
    task_id: str, status: str, result: str | None, exception: Any, details: dict | None,
    completion_t: float | None = None,
) -> tuple[bool, Any]:
    """(ok, value): the deserialized value, or the exception to raise for this terminal task
    (`completion_t`: when it ended, else the worker's time in `details`)."""
    check_versions(details)
    if status == TaskState.SUCCESS.value:
        return True, serialize.deserialize(result) if result is not None else None
    if status == TaskState.CANCELLED.value:
        return False, TaskCancelled(task_id)
    if exception:
        return False, recreate_exception(exception, task_id, completion_t, details)
    return False, TaskExecutionFailed(f"task {task_id} failed without an exception",
                                      _completion_text(completion_t, details), details,
                                      task_id=task_id)
