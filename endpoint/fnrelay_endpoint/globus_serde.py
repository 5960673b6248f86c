"""Tasks in Globus Compute's format, run with its own serialization strategies.

`globus_compute_sdk.serialize` is imported when the first such task arrives, so endpoints that
never get one need no globus-compute-sdk (and its dill pin); without it a Globus Compute task
fails with a clear error (`fnrelay[globus-compute]` installs it), the endpoint runs on.
"""

from __future__ import annotations

from typing import Any

from fnrelay.errors import SerializationError
from fnrelay.wire import TaskMessage
from fnrelay.wire.globus import task_buffer


class GlobusComputeMissing(SerializationError):
    """A Globus Compute task reached an endpoint without globus-compute-sdk."""


def _serializer() -> Any:
    try:
        from globus_compute_sdk.serialize import ComputeSerializer
    except ImportError as e:
        raise GlobusComputeMissing(
            "this task was submitted with the Globus Compute SDK, and this endpoint cannot "
            f"deserialize it: globus-compute-sdk is not importable here ({e}); install "
            "'fnrelay[globus-compute]' in the endpoint's environment") from None
    return ComputeSerializer()


def call(task: TaskMessage) -> Any:
    """Deserialize the task's function, args and kwargs as Globus Compute does, and call it."""
    fn, args, kwargs = _serializer().unpack_and_deserialize(
        task_buffer(task.function, task.payload))
    return fn(*args, **kwargs)


def serialize_result(value: Any, strategies: list[str]) -> str:
    """`value` in the first of the submitter's strategies that takes it (none: GC's
    defaults), as Globus Compute's endpoint answers."""
    return str(_serializer().serialize_from_list(value, strategies))
