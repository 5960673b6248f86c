"""Exceptions the SDK raises. Each says what went wrong and, where it can, what to do."""

from __future__ import annotations


class FnRelayError(Exception):
    """Base class of every fnrelay error."""


class ConfigurationError(FnRelayError):
    """Missing or invalid settings (broker URL, token, endpoint config)."""


class SerializationError(FnRelayError):
    """A function, argument or result could not be (de)serialized."""


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


class TaskPending(FnRelayError):
    """The task has no result yet."""

    def __init__(self, task_id: str, status: str):
        super().__init__(f"task {task_id} is still pending (status: {status})")
        self.task_id = task_id
        self.status = status


class TaskCancelled(FnRelayError):
    """The task was cancelled before it produced a result."""

    def __init__(self, task_id: str):
        super().__init__(f"task {task_id} was cancelled")
        self.task_id = task_id


class TaskExecutionFailed(FnRelayError):
    """A remote failure that could not be re-created as its original exception type."""

    def __init__(self, message: str, remote_traceback: str = "", task_id: str | None = None):
        super().__init__(message)
        self.remote_traceback = remote_traceback
        self.task_id = task_id

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback
        return text
