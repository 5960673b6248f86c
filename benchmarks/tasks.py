"""The no-op task every system runs, and the size of the message that carries it."""

from __future__ import annotations

import types
import uuid
from typing import Any


def _noop(x: Any = None) -> Any:
    return x


def portable(fn: types.FunctionType) -> types.FunctionType:
    """A copy of `fn` that pickles by value with empty globals.

    Parsl's and fnrelay's workers do not have `benchmarks` on their path, and dill pickles a
    `__main__` function by value, so the copy claims that module and takes no globals along.
    """
    copy = types.FunctionType(fn.__code__, {"__builtins__": __builtins__}, fn.__name__,
                              fn.__defaults__, fn.__closure__)
    copy.__module__ = "__main__"
    copy.__qualname__ = fn.__name__
    return copy


#: Returns its argument: the harness checks every result equals what it sent.
noop = portable(_noop)
noop.__name__ = noop.__qualname__ = "noop"


def task_message_size() -> int:
    """Bytes of one fnrelay `tasks` message carrying one no-op call (what raw AMQP sends)."""
    from fnrelay import serialize, wire

    msg = wire.TaskMessage(
        task_id=str(uuid.uuid4()), function_id=str(uuid.uuid4()),
        function=serialize.serialize_function(noop), payload=serialize.serialize_args((0,), {}),
        task_group_id=str(uuid.uuid4()))
    return len(wire.encode_tasks([msg]))
