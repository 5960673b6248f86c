"""Run one task: deserialize, call, serialize. Used inside pool processes and batch jobs.

Failures never escape as Python exceptions: every outcome becomes a ResultMessage, so the
caller (a pool worker or a job wrapper) only has to ship it back. That includes what the task
raises beyond `Exception` (SystemExit from argparse or click, KeyboardInterrupt) and an
exception that cannot even be described (its `__str__` raises): all are the task's own answer,
and a worker that died of them would be retried as lost infrastructure.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from typing import Any

from fnrelay import serialize
from fnrelay.errors import MaxResultSizeExceeded, PythonVersionMismatch, SerializationError
from fnrelay.wire import (
    FORMAT_FNRELAY,
    FORMAT_GLOBUS,
    ExceptionInfo,
    ResultMessage,
    TaskMessage,
    TaskState,
    now,
    pyversion,
)

#: Largest serialized result (bytes) unless the endpoint sets `result_size_limit`; the agent
#: passes its configured value to workers in this environment variable.
DEFAULT_RESULT_SIZE_LIMIT = 10 * 1024 * 1024
ENV_RESULT_SIZE_LIMIT = "FNRELAY_RESULT_SIZE_LIMIT"


class ResultTooLargeError(MaxResultSizeExceeded):
    """A task's serialized result exceeded the endpoint's result size limit: Globus
    Compute's MaxResultSizeExceeded (and a SerializationError), with fnrelay's message."""

    def __init__(self, message: str, result_size: int = 0, result_size_limit: int = 0):
        super().__init__(result_size, result_size_limit, message)
        self.args = (message, result_size, result_size_limit)  # what unpickling passes


def result_size_limit() -> int:
    """The limit this process enforces (the agent's config, else the default)."""
    try:
        return int(os.environ.get(ENV_RESULT_SIZE_LIMIT) or DEFAULT_RESULT_SIZE_LIMIT)
    except ValueError:
        return DEFAULT_RESULT_SIZE_LIMIT


def too_large_error(size: int, limit: int) -> ResultTooLargeError:
    return ResultTooLargeError(
        f"the task's result is {_mb(size)} serialized ({size} bytes), over this endpoint's "
        f"result size limit of {_mb(limit)} ({limit} bytes); return a smaller value or write "
        "large data to shared storage and return its path", size, limit)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


#: Deserialized functions of this process, by their serialized code: a function id names
#: the code only as far as its sender is honest (the broker checks REST tasks; a direct-path
#: task's id is the Executor's word), so the id alone could run another task's code.
_FUNCTIONS: dict[str, Any] = {}


def check_python_version(task: TaskMessage) -> None:
    """PythonVersionMismatch if the task's function is bytecode of another minor version:
    unpickling it would fail obscurely or crash the worker (then the task would be retried
    as lost), and no retry on this interpreter can succeed."""
    submitted = pyversion.major_minor(task.python_version)
    if (submitted is None or submitted == pyversion.here() or task.format != FORMAT_FNRELAY
            or not task.function.startswith(serialize.TAG_DILL_CODE + "\n")):
        return
    raise PythonVersionMismatch(submitted, pyversion.here(), task.function_id)


def load_function(task: TaskMessage) -> Any:
    """The task's callable, deserialized once per process."""
    check_python_version(task)
    fn = _FUNCTIONS.get(task.function)
    if fn is None:
        fn = serialize.deserialize(task.function)
        _FUNCTIONS[task.function] = fn
    return fn


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def exit_status(exc: SystemExit) -> int:
    """The exit status Python gives `sys.exit(code)`: None is 0, an int itself, else 1."""
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) and not isinstance(code, bool) else 1


def _text(exc: BaseException) -> str:
    """str(exc), or a stand-in when the exception's own __str__ raises (as traceback does)."""
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001 - any failure here would kill the worker
        return f"<exception str() failed: {qualified_name(type(exc))}>"


def exception_info(exc: BaseException, skip_frames: int = 0) -> ExceptionInfo:
    """Describe `exc` for the wire; `skip_frames` drops fnrelay's own outer frames.

    Only an `Exception` is shipped as an object to re-raise: a SystemExit or KeyboardInterrupt
    re-raised by `future.result()` would end or interrupt the caller's own program (silently,
    for code 0), so those reach the SDK as their type, message and traceback
    (TaskExecutionFailed).
    """
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    serialized: str | None = None
    if isinstance(exc, Exception):
        try:
            serialized = serialize.serialize(exc)
        except BaseException:  # noqa: BLE001 - an unpicklable exception still reports its text
            serialized = None
    message = _text(exc)
    if isinstance(exc, SystemExit):
        message = f"the task called sys.exit() (exit code {exit_status(exc)})" + (
            f": {message}" if isinstance(exc.code, str) else "")
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # noqa: BLE001 - e.g. a __repr__ in a frame that raises
        text = f"{qualified_name(type(exc))}: {message}\n(the traceback could not be formatted)\n"
    return ExceptionInfo(type=qualified_name(type(exc)), message=message, traceback=text,
                         serialized=serialized)


def _call(task: TaskMessage) -> Any:
    if task.format == FORMAT_GLOBUS:
        from fnrelay_endpoint import globus_serde

        return globus_serde.call(task)
    fn = load_function(task)
    args, kwargs = serialize.deserialize_args(task.payload)
    return fn(*args, **kwargs)


def _serialize(task: TaskMessage, value: Any) -> str:
    """The result in the task's format (a Globus Compute task: the submitter's strategies)."""
    if task.format == FORMAT_GLOBUS:
        from fnrelay_endpoint import globus_serde

        return globus_serde.serialize_result(value, task.result_serializers)
    return serialize.serialize(value)


def execute(task: TaskMessage, size_limit: int | None = None) -> ResultMessage:
    """Run `task` and describe the outcome; never raises for the task's own failures.

    A result larger than `size_limit` (default: `result_size_limit()`) is not shipped: the
    task fails with ResultTooLargeError saying how big it was.
    """
    limit = size_limit if size_limit is not None else result_size_limit()
    details: dict[str, Any] = {
        **serialize.versions(),
        "python": sys.executable,  # with python_version: which interpreter ran the task
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
    except BaseException as e:  # noqa: BLE001 - whatever the task raised is its answer
        result.status = TaskState.FAILED.value
        result.exception = exception_info(e, skip_frames=2)
        if isinstance(e, SystemExit):
            details["exit_code"] = exit_status(e)
    else:
        try:
            result.result = _serialize(task, value)
        except BaseException as e:  # noqa: BLE001 - a value whose pickling raises SystemExit
            result.status = TaskState.FAILED.value
            err = SerializationError(
                f"the task's result of type {qualified_name(type(value))} cannot be "
                f"serialized: {_text(e)}"
            )
            result.exception = exception_info(err)
        else:
            size = len(result.result.encode())
            if size > limit:
                result.status, result.result = TaskState.FAILED.value, None
                result.exception = exception_info(too_large_error(size, limit))
                details["result_size"] = size
    details["completed"] = now()
    return result


def cancelled_result(task_id: str, task_group_id: str | None = None,
                     reason: str = "cancelled") -> ResultMessage:
    """The result reported for a task that was cancelled before it finished."""
    return ResultMessage(
        task_id=task_id, status=TaskState.CANCELLED.value, task_group_id=task_group_id,
        details={"detail": reason, "completed": now()},
    )
