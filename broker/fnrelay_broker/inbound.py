"""Check what endpoints send before it reaches the database.

`fnrelay.wire` decodes JSON into messages but does not check field types, and the
database refuses some values (a list where text goes, NUL, lone surrogates) with errors that
are not ValueError. The result consumer would then fail, reconnect and get the same message
again, forever, holding up every endpoint's results. Here every such message becomes a
ValueError, which the consumer answers by rejecting the message. Numbers JSON has not (NaN,
Infinity, 1e999: Python's json writes and reads them, PostgreSQL's json refuses them) read as
null, so a result carrying one is kept. Nothing is unpickled: the serialized values stay
opaque text.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from fnrelay import wire
from fnrelay.wire import Heartbeat, ResultMessage, StatusUpdate, TaskMessage
from fnrelay_broker.validation import check_tree

_EXCEPTION_TEXT = ("type", "message", "traceback")


def _items(body: bytes, key: str) -> list[dict[str, Any]]:
    d = wire.decode(body, finite=True)
    if not isinstance(d, dict) or not isinstance(d.get(key), list):
        raise ValueError(f"body is not an object with a list {key!r}")
    check_tree(d)
    if not all(isinstance(item, dict) for item in d[key]):
        raise ValueError(f"every item of {key!r} must be an object")
    return d[key]


def _require(item: dict[str, Any], field: str, types: tuple[type, ...], optional: bool) -> None:
    value = item.get(field)
    if value is None and optional:
        return
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        raise ValueError(f"{field!r} must be {' or '.join(t.__name__ for t in types)}"
                         f"{' or null' if optional else ''}, not {type(value).__name__}")


def results(body: bytes) -> list[ResultMessage]:
    """Decode a `results` message; ValueError unless every field has its documented type."""
    items = _items(body, "results")
    for item in items:
        _require(item, "task_id", (str,), optional=False)
        _require(item, "status", (str,), optional=False)
        _require(item, "result", (str,), optional=True)
        _require(item, "task_group_id", (str,), optional=True)
        _require(item, "details", (dict,), optional=True)
        _require(item, "exception", (dict,), optional=True)
        _require(item, "record", (dict,), optional=True)
        exc = item.get("exception")
        if exc is not None:
            for field in _EXCEPTION_TEXT:
                _require(exc, field, (str,), optional=False)
            _require(exc, "serialized", (str,), optional=True)
    return [ResultMessage.from_dict(item) for item in items]  # unknown keys are ignored


def _uuid(item: dict[str, Any], field: str) -> None:
    value = item.get(field)
    try:
        ok = str(uuid.UUID(value)) == value
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"{field!r} must be a UUID in canonical form")


def direct_tasks(body: bytes) -> list[TaskMessage]:
    """Decode a `tasks` message an Executor published on the direct path; ValueError unless
    every field has its documented type and the message names one task group."""
    items = _items(body, "tasks")
    if not items:
        raise ValueError("no tasks")
    for item in items:
        _uuid(item, "task_id")
        _uuid(item, "function_id")
        _uuid(item, "task_group_id")
        _require(item, "function", (str,), optional=False)
        _require(item, "payload", (str,), optional=False)
        _require(item, "resource_specification", (dict,), optional=True)
        _require(item, "user_endpoint_config", (dict,), optional=True)
        _require(item, "max_retries", (int,), optional=True)
        if (item.get("max_retries") or 0) < 0:
            raise ValueError("'max_retries' must not be negative")
    if len({item["task_group_id"] for item in items}) != 1:
        raise ValueError("a direct tasks message carries one task group's tasks")
    return [TaskMessage(**{k: v for k, v in wire.known_fields(TaskMessage, item).items()
                           if v is not None}) for item in items]


def status(body: bytes) -> list[StatusUpdate]:
    """Decode a `status` message; ValueError unless every field has its documented type."""
    items = _items(body, "updates")
    for item in items:
        _require(item, "task_id", (str,), optional=False)
        _require(item, "status", (str,), optional=False)
        _require(item, "time", (int, float), optional=True)
        _require(item, "detail", (str,), optional=True)
    # Keys this version does not know (from newer endpoints) are ignored.
    return [StatusUpdate(**{k: v for k, v in wire.known_fields(StatusUpdate, item).items()
                            if v is not None})
            for item in items]


def heartbeat(endpoint_id: str, body: bytes) -> Heartbeat:
    """Decode a `heartbeat` message (the sender is the routing key, not the body)."""
    d = wire.decode(body, finite=True)
    if not isinstance(d, dict):
        raise ValueError("heartbeat body is not an object")
    check_tree(d)
    _require(d, "time", (int, float), optional=True)
    _require(d, "info", (dict,), optional=True)
    try:
        t = float(d["time"]) if d.get("time") is not None else wire.now()
    except OverflowError:  # an integer beyond any float
        t = math.inf
    if not math.isfinite(t):
        raise ValueError("heartbeat time is not a finite number")
    return Heartbeat(endpoint_id=endpoint_id, time=t, info=d.get("info") or {})


def document(body: bytes) -> dict[str, Any]:
    """Decode a message that is one JSON object (e.g. `child-failed`)."""
    d = wire.decode(body, finite=True)
    if not isinstance(d, dict):
        raise ValueError("message body is not an object")
    return check_tree(d)
