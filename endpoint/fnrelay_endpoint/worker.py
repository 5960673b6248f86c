"""Run one task: deserialize, call, serialize. Used inside pool processes and batch jobs.

Failures never escape as Python exceptions: every outcome becomes a ResultMessage, so the
caller (a pool worker or a job wrapper) only has to ship it back.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any

from fnrelay import serialize
from fnrelay.errors import SerializationError
from fnrelay.protocol import ExceptionInfo, ResultMessage, TaskMessage, TaskState, now

#: Deserialized functions of this process, by function_id (function bodies are immutable).
_FUNCTIONS: dict[str, Any] = {}


def load_function(task: TaskMessage) -> Any:
    """The task's callable, deserialized once per process."""
    fn = _FUNCTIONS.get(task.function_id)
    if fn is None:
        fn = serialize.deserialize(task.function)
        _FUNCTIONS[task.function_id] = fn
    return fn


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_info(exc: BaseException, skip_frames: int = 0) -> ExceptionInfo:
    """Describe `exc` for the wire; `skip_frames` drops fnrelay's own outer frames."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        serialized: str | None = serialize.serialize(exc)
    except Exception:  # noqa: BLE001 - an unpicklable exception still reports its text
        serialized = None
    return ExceptionInfo(
        type=qualified_name(type(exc)),
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, tb)),
        serialized=serialized,
    )


def _call(task: TaskMessage) -> Any:
    fn = load_function(task)
    args, kwargs = serialize.deserialize_args(task.payload)
    return fn(*args, **kwargs)


def execute(task: TaskMessage) -> ResultMessage:
    """Run `task` and describe the outcome; never raises for the task's own failures."""
    details: dict[str, Any] = {
        **serialize.versions(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "started": now(),
    }
    result = ResultMessage(
        task_id=task.task_id, status=TaskState.SUCCESS.value, task_group_id=task.task_group_id,
        details=details,
    )
    try:
        value = _call(task)
    except Exception as e:  # noqa: BLE001 - the user's failure is the task's result
        result.status = TaskState.FAILED.value
        result.exception = exception_info(e, skip_frames=2)
    else:
        try:
            result.result = serialize.serialize(value)
        except Exception as e:  # noqa: BLE001
            result.status = TaskState.FAILED.value
            err = SerializationError(
                f"the task's result of type {qualified_name(type(value))} cannot be "
                f"serialized: {e}"
            )
            result.exception = exception_info(err)
    details["completed"] = now()
    return result


def cancelled_result(task_id: str, task_group_id: str | None = None,
                     reason: str = "cancelled") -> ResultMessage:
    """The result reported for a task that was cancelled before it finished."""
    return ResultMessage(
        task_id=task_id, status=TaskState.CANCELLED.value, task_group_id=task_group_id,
        details={"detail": reason, "completed": now()},
    )
