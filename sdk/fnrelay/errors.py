"""Exceptions the SDK raises. Each says what went wrong and, where it can, what to do.

Globus Compute's names live here too (``globus_compute_sdk.errors``: ComputeError, SerdeError,
SerializationError, DeserializationError, TaskPending, VersionMismatch,
MaxResultSizeExceeded, TaskExecutionFailed), with the attributes its users read, so code that
catches them runs with only its import changed.
"""

from __future__ import annotations

import textwrap
import time
from typing import Any


class FnRelayError(Exception):
    """Base class of every fnrelay error."""


#: Globus Compute's base class of its own errors.
ComputeError = FnRelayError


class ConfigurationError(FnRelayError):
    """Missing or invalid settings (broker URL, token, endpoint config)."""


class SerdeError(FnRelayError):
    """A value or function could not be (de)serialized; `reason` says why (as in GC)."""

    def __init__(self, reason: str, *args: Any):
        super().__init__(reason, *args)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class SerializationError(SerdeError):
    """A function, argument or result could not be (de)serialized."""


class DeserializationError(SerializationError):
    """Bytes could not be turned back into a value or function.

    A SerializationError too (unlike GC, where they are siblings): fnrelay code written
    before this class existed catches SerializationError for both directions.
    """


class PythonVersionMismatch(DeserializationError):
    """A function that could travel only as bytecode reached a worker on another Python
    minor version, which cannot read it (raised on the endpoint as the task's exception)."""

    def __init__(self, submitted: str, worker: str, function: str = ""):
        what = f"function {function}" if function else "the function"
        super().__init__(
            f"{what} was sent as Python {submitted} bytecode (its source was not available) "
            f"and this endpoint's worker runs Python {worker}, which cannot read it; define "
            "the function in a module the endpoint can import, or make its source available "
            "(a file or notebook cell, not exec() of a string), or ask the endpoint's "
            f"administrator for a Python {submitted} interpreter")
        self.args = (submitted, worker, function)  # what unpickling passes
        self.submitted, self.worker, self.function = submitted, worker, function


class PythonVersionWarning(UserWarning):
    """This SDK's Python minor version is not one the endpoint runs: functions travel as
    source and cross versions, but one without source would fail (PythonVersionMismatch),
    and arguments and results must unpickle on both sides."""


class MaxResultSizeExceeded(SerializationError):
    """A task's serialized result exceeded the endpoint's result size limit.

    Raised on the endpoint as the task's exception, so the caller catches it (and
    TaskExecutionFailed) from the future or ``get_result``. `detail` is fnrelay's fuller
    message (what to do instead); GC's text is the fallback.
    """

    def __init__(self, result_size: int, result_size_limit: int, detail: str = ""):
        gc_text = (f"Task result of {result_size}B exceeded current limit of "
                   f"{result_size_limit}B")
        super().__init__(detail or gc_text)
        # Pickling re-creates the error from args (it crosses the wire): all three.
        self.args = (result_size, result_size_limit, detail)
        self.result_size = result_size
        self.result_size_limit = result_size_limit


class VersionMismatch(FnRelayError):
    """The broker speaks another protocol version than this SDK (GC: `version_message`)."""

    def __init__(self, version_message: str):
        super().__init__(version_message)
        self.version_message = version_message


class BrokerError(FnRelayError):
    """The broker refused a request. `http_status` and `code` come from its answer."""

    def __init__(self, message: str, http_status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.code = code


class AuthenticationError(BrokerError):
    """The token is missing, wrong or revoked (HTTP 401/403)."""


class NotFoundError(BrokerError):
    """Unknown function, endpoint, task or task group, or one that is not yours (HTTP 404)."""


class PayloadTooLargeError(BrokerError):
    """A submission exceeded the broker's payload limit (HTTP 413)."""


class BrokerUnavailableError(BrokerError):
    """The broker could not be reached after retries."""


class QuotaExceededError(BrokerError):
    """The broker refused a submit: you have as many unfinished tasks as it allows one user
    (HTTP 429). Nothing of the request was stored; submit again after `retry_after` seconds
    (the Executor does so itself, its futures staying pending)."""

    def __init__(self, message: str, http_status: int | None = 429, code: str | None = None,
                 retry_after: float = 5.0):
        super().__init__(message, http_status, code)
        self.retry_after = retry_after


class EndpointLimitError(BrokerError):
    """The broker refused a new endpoint: you have as many as it allows one user, child
    endpoints that multi-user endpoints made for your tasks included (HTTP 403,
    TOO_MANY_ENDPOINTS). A submit to a multi-user endpoint that needed a new child is refused
    whole. Waiting does not help: delete endpoints you no longer use."""


class MPILaunchError(FnRelayError):
    """An MPIFunction's launcher started no rank (its own error, not the program's)."""


class TaskPending(FnRelayError):
    """The task has no result yet; `reason` is its status (as in GC)."""

    def __init__(self, reason: str, task_id: str | None = None):
        super().__init__(reason, task_id)  # the args pickling calls __init__ with
        self.reason = reason
        self.status = reason
        self.task_id = task_id

    def __str__(self) -> str:
        where = f"task {self.task_id}" if self.task_id else "the task"
        return f"{where} is still pending (status: {self.reason})"


class TaskCancelled(FnRelayError):
    """The task was cancelled before it produced a result."""

    def __init__(self, task_id: str):
        super().__init__(task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return f"task {self.task_id} was cancelled"


class TaskExecutionFailed(FnRelayError):
    """A task failed remotely; `remote_data` is its traceback (or type and message).

    GC's constructor and attributes (`remote_data`, `completion_t`, `task_details`), plus
    fnrelay's `task_id` and `remote_traceback`. Where the remote exception could be re-created,
    what is raised is an instance of a class derived from both it and this one (see
    fnrelay.results), so ``except TaskExecutionFailed`` and ``except ValueError`` both work.
    """

    def __init__(self, remote_data: str, completion_t: str | None = None,
                 task_details: dict | None = None, *, task_id: str | None = None):
        super().__init__(remote_data, completion_t, task_details)
        self.remote_data = remote_data
        self.completion_t = completion_t or str(time.time())
        self.task_details = task_details
        self.task_id = task_id

    @property
    def remote_traceback(self) -> str:
        """The remote traceback (fnrelay's older name of `remote_data`)."""
        return self.remote_data

    def __str__(self) -> str:
        # GC's text: the remote traceback, indented one space, on the lines after the type.
        return "\n" + textwrap.indent(self.remote_data, " ")
