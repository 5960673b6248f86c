"""Every message and record fnrelay sends, with its encoder and its one typed decoder.

Bodies are JSON objects (UTF-8) carrying the protocol version under "v" and many items each
(tasks, results, status updates), so one publish and one confirm serve many tasks; serialized
Python values inside them are the header-tagged strings of :mod:`fnrelay.serialize`, opaque
here (nothing is unpickled).

Decoders (`decode_*`, `*.from_dict`) raise WireError for anything malformed, ignore keys they
do not know (newer peers may send more), and read null as an absent field. Every one takes
`finite` (NaN, Infinity and 1e999 read as null) and `check` (a further rule on the whole
document) for consumers that store what they decode: the broker.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fnrelay.wire import codec, runtime
from fnrelay.wire.codec import Check, WireError, encode
from fnrelay.wire.ids import is_uuid, now

PROTOCOL_VERSION = 1

#: The formats of a task's serialized function, payload and result. The route a task came by
#: decides it (/v1: fnrelay's; Globus Compute's /v2 and /v3: theirs) and the task carries it to
#: the endpoint: the two formats' serialization tags collide, so it is never guessed.
FORMAT_FNRELAY = "fnrelay"
FORMAT_GLOBUS = "globus-compute"
FORMATS = (FORMAT_FNRELAY, FORMAT_GLOBUS)


# --- tasks ---------------------------------------------------------------------------------
@dataclass
class TaskMessage:
    """One task as the endpoint receives it."""

    task_id: str
    function_id: str
    function: str  # serialized function (fnrelay.serialize), so endpoints need no lookup
    payload: str  # serialized (args, kwargs)
    task_group_id: str | None = None
    resource_specification: dict[str, Any] = field(default_factory=dict)
    user_endpoint_config: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    #: Re-runs after infrastructure failures; None: the endpoint's default.
    max_retries: int | None = None
    #: Submitted on the direct path: the endpoint also publishes the result to the group.
    direct: bool = False
    #: How `function`, `payload` and the result are serialized (FORMATS).
    format: str = FORMAT_FNRELAY
    #: Globus Compute tasks: import paths of the strategies to serialize the result with, in
    #: order of preference (empty: its defaults).
    result_serializers: list[str] = field(default_factory=list)
    #: The submitter's Python "major.minor" (e.g. "3.12"): the endpoint runs the task on an
    #: interpreter of that version when it has one. None: unknown (then the endpoint's own).
    python_version: str | None = None
    #: The broker's id of the user who submitted it: an endpoint shares its workers fairly
    #: among submitters (trusted only from the broker; None on the owner's direct path).
    submitter: str | None = None

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> TaskMessage:
        """One task of a `tasks` message (or the endpoint's own copy of one); WireError
        unless every field has the type the engines rely on."""
        if not isinstance(item, dict):
            raise WireError(f"a task must be an object, not {type(item).__name__}")
        attempt = codec.opt_int(item, "attempt")
        fmt = codec.opt_text(item, "format") or FORMAT_FNRELAY
        if fmt not in FORMATS:
            raise WireError(f"unknown task format {fmt!r} (known: {', '.join(FORMATS)})")
        serializers = item.get("result_serializers") or []
        if not isinstance(serializers, list) or not all(isinstance(x, str) for x in serializers):
            raise WireError("'result_serializers' must be a list of strings")
        return cls(
            task_id=codec.text(item, "task_id"),
            function_id=codec.text(item, "function_id"),
            function=codec.text(item, "function"),
            payload=codec.text(item, "payload"),
            task_group_id=codec.opt_text(item, "task_group_id"),
            resource_specification=codec.obj(item, "resource_specification"),
            user_endpoint_config=codec.obj(item, "user_endpoint_config"),
            attempt=1 if attempt is None else attempt,
            max_retries=codec.opt_count(item, "max_retries"),
            direct=codec.flag(item, "direct"),
            format=fmt,
            result_serializers=serializers,
            python_version=codec.opt_text(item, "python_version"),
            submitter=codec.opt_text(item, "submitter"),
        )


def task_from_entry(task_id: str, entry: dict[str, Any], function: str,
                    task_group_id: str | None, direct: bool = False,
                    submitter: str | None = None) -> TaskMessage:
    """The endpoint's view of a submit entry (`fnrelay.client.task_entry`, checked by the
    broker's REST model or built by the Executor), with the function's serialized code."""
    return TaskMessage(
        task_id=task_id, function_id=entry["function_id"], function=function,
        payload=entry["payload"], task_group_id=task_group_id,
        resource_specification=entry.get("resource_specification") or {},
        user_endpoint_config=entry.get("user_endpoint_config") or {},
        max_retries=entry.get("max_retries"), direct=direct,
        format=entry.get("format") or FORMAT_FNRELAY,
        result_serializers=entry.get("result_serializers") or [],
        python_version=entry.get("python_version"),
        submitter=submitter,
    )


def encode_tasks(tasks: Sequence[TaskMessage]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "tasks": tasks})


def decode_tasks(body: bytes, *, finite: bool = False, check: Check | None = None
                 ) -> list[TaskMessage]:
    return [TaskMessage.from_dict(t)
            for t in codec.items(body, "tasks", finite=finite, check=check)]


def decode_direct_tasks(body: bytes, *, finite: bool = False, check: Check | None = None
                        ) -> list[TaskMessage]:
    """A `tasks` message an Executor published on the direct path: besides the types, ids
    are canonical UUIDs (they key the broker's rows) and the message names one task group
    (the one whose account sent it)."""
    tasks = decode_tasks(body, finite=finite, check=check)
    if not tasks:
        raise WireError("no tasks")
    for t in tasks:
        for name in ("task_id", "function_id", "task_group_id"):
            if not is_uuid(getattr(t, name)):
                raise WireError(f"{name!r} must be a UUID in canonical form")
    if len({t.task_group_id for t in tasks}) != 1:
        raise WireError("a direct tasks message carries one task group's tasks")
    return tasks


def decode_task(text: bytes | str) -> TaskMessage:
    """One task stored as JSON by the endpoint (journal, batch sandbox)."""
    return TaskMessage.from_dict(codec.document(text))


# --- results -------------------------------------------------------------------------------
@dataclass
class ExceptionInfo:
    """A remote failure: enough to re-raise it locally or show it."""

    type: str  # qualified name, e.g. "builtins.ZeroDivisionError"
    message: str
    traceback: str
    serialized: str | None = None  # the exception object itself, when it could be serialized

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> ExceptionInfo:
        if not isinstance(item, dict):
            raise WireError(f"'exception' must be dict or null, not {type(item).__name__}")
        return cls(type=codec.text(item, "type"), message=codec.text(item, "message"),
                   traceback=codec.text(item, "traceback"),
                   serialized=codec.opt_text(item, "serialized"))


@dataclass
class DirectRecord:
    """What the broker needs to record a direct-path task from its result alone, should the
    Executor's record of it never arrive: the endpoint puts it in its copy of the result for
    the broker (`ResultMessage.record`)."""

    function_id: str
    function_sha256: str  # SHA-256 (hex) of the serialized function the endpoint ran
    resource_specification: dict[str, Any] = field(default_factory=dict)
    user_endpoint_config: dict[str, Any] = field(default_factory=dict)
    max_retries: int | None = None

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> DirectRecord:
        if not isinstance(item, dict):
            raise WireError(f"'record' must be dict or null, not {type(item).__name__}")
        digest = codec.text(item, "function_sha256")
        if len(digest) != 64:
            raise WireError("'function_sha256' must be 64 hex digits")
        return cls(function_id=codec.text(item, "function_id"), function_sha256=digest,
                   resource_specification=codec.obj(item, "resource_specification"),
                   user_endpoint_config=codec.obj(item, "user_endpoint_config"),
                   max_retries=codec.opt_count(item, "max_retries"))


def decode_record(value: Any) -> DirectRecord | None:
    """A result's record, or None if it has none or a malformed one: the record is only the
    broker's fallback, so a bad one costs the fallback, never the result."""
    if value is None or isinstance(value, DirectRecord):
        return value
    try:
        return DirectRecord.from_dict(value)
    except WireError:
        return None


@dataclass
class ResultMessage:
    """The outcome of one task, from the endpoint (and forwarded to the task group)."""

    task_id: str
    status: str  # "success" | "failed" | "cancelled"
    result: str | None = None  # serialized value when status == success
    exception: ExceptionInfo | None = None
    details: dict[str, Any] = field(default_factory=dict)  # python/dill versions, times, worker
    task_group_id: str | None = None
    #: Direct-path tasks only, in the endpoint's copy for the broker.
    record: DirectRecord | None = None
    #: The task's format (FORMATS), which the broker sets from its record to forward the
    #: result in it: never sent (LOCAL), never read from an endpoint.
    format: str = field(default=FORMAT_FNRELAY, metadata=codec.LOCAL)

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> ResultMessage:
        """One result of a `results` message (or a task record of the REST API, whose other
        keys are ignored); WireError unless every field has its documented type. A record
        that is an object but not a well-formed one is dropped (`decode_record`)."""
        if not isinstance(item, dict):
            raise WireError(f"a result must be an object, not {type(item).__name__}")
        exc, record = item.get("exception"), item.get("record")
        if record is not None and not isinstance(record, dict):
            raise WireError(f"'record' must be dict or null, not {type(record).__name__}")
        return cls(
            task_id=codec.text(item, "task_id"),
            status=codec.text(item, "status"),
            result=codec.opt_text(item, "result"),
            exception=None if exc is None else ExceptionInfo.from_dict(exc),
            details=codec.obj(item, "details"),
            task_group_id=codec.opt_text(item, "task_group_id"),
            record=decode_record(record),
        )


def encode_results(results: Sequence[ResultMessage]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "results": results})


def decode_results(body: bytes, *, finite: bool = False, check: Check | None = None
                   ) -> list[ResultMessage]:
    return [ResultMessage.from_dict(r)
            for r in codec.items(body, "results", finite=finite, check=check)]


def decode_result(text: bytes | str) -> ResultMessage:
    """One result stored as JSON by the endpoint (journal, batch sandbox, Parsl worker)."""
    return ResultMessage.from_dict(codec.document(text))


# --- status and heartbeats -----------------------------------------------------------------
@dataclass
class StatusUpdate:
    """A non-terminal state change seen by the endpoint (e.g. running, waiting-for-nodes)."""

    task_id: str
    status: str
    time: float = field(default_factory=now)
    detail: str = ""

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> StatusUpdate:
        if not isinstance(item, dict):
            raise WireError(f"a status update must be an object, not {type(item).__name__}")
        time = codec.opt_number(item, "time")
        return cls(task_id=codec.text(item, "task_id"), status=codec.text(item, "status"),
                   time=now() if time is None else time,
                   detail=codec.opt_text(item, "detail") or "")


def encode_status(updates: Sequence[StatusUpdate]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "updates": updates})


def decode_status(body: bytes, *, finite: bool = False, check: Check | None = None
                  ) -> list[StatusUpdate]:
    return [StatusUpdate.from_dict(u)
            for u in codec.items(body, "updates", finite=finite, check=check)]


@dataclass
class Heartbeat:
    endpoint_id: str
    time: float = field(default_factory=now)
    info: dict[str, Any] = field(default_factory=dict)


def encode_heartbeat(heartbeat: Heartbeat) -> bytes:
    return encode(heartbeat)


def decode_heartbeat(body: bytes, endpoint_id: str, *, finite: bool = False,
                     check: Check | None = None) -> Heartbeat:
    """A `heartbeat` message of `endpoint_id`: the sender is the routing key, which RabbitMQ
    checks, never the body. WireError unless its time is a finite number (or absent)."""
    d = codec.document(body, finite=finite, check=check)
    raw = codec.opt_number(d, "time")
    try:
        t = now() if raw is None else float(raw)
    except OverflowError:  # an integer beyond any float
        t = math.inf
    if not math.isfinite(t):
        raise WireError("heartbeat time is not a finite number")
    return Heartbeat(endpoint_id=endpoint_id, time=t, info=codec.obj(d, "info"))


# --- cancel --------------------------------------------------------------------------------
def encode_cancel(task_ids: list[str]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "task_ids": task_ids})


def decode_cancel(body: bytes, *, finite: bool = False, check: Check | None = None
                  ) -> list[str]:
    """The task ids of a `cancel` message."""
    ids = codec.document(body, finite=finite, check=check).get("task_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise WireError("'task_ids' must be a list of strings")
    return ids


# --- multi-user endpoints ------------------------------------------------------------------
def canonical_config(user_endpoint_config: dict[str, Any] | None) -> str:
    """One JSON text per config (sorted keys, no spaces): equal configs pick the same child."""
    return json.dumps(user_endpoint_config or {}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


@dataclass
class StartChild:
    """Ask a manager to start (or keep running) the child for one user and config."""

    child_id: str
    user_id: str
    username: str
    user_endpoint_config: dict[str, Any] = field(default_factory=dict)
    #: What the submitting SDK reported (`_GC.user_runtime` of the child's template).
    user_runtime: dict[str, Any] = field(default_factory=dict)


def encode_start_child(msg: StartChild) -> bytes:
    # An empty runtime is left out: the bytes of a message without one stay those older
    # managers and brokers exchange.
    fields = _fields(msg)
    if not fields["user_runtime"]:
        del fields["user_runtime"]
    return encode({"v": PROTOCOL_VERSION, **fields})


def decode_start_child(body: bytes, *, finite: bool = False, check: Check | None = None
                       ) -> StartChild:
    d = codec.document(body, finite=finite, check=check)
    return StartChild(child_id=codec.text(d, "child_id"), user_id=codec.text(d, "user_id"),
                      username=codec.text(d, "username"),
                      user_endpoint_config=codec.obj(d, "user_endpoint_config"),
                      user_runtime=runtime.check(d.get("user_runtime")))


@dataclass
class ChildFailed:
    """A manager could not run a child (identity refused, config invalid, start failed)."""

    child_id: str
    error: str


def encode_child_failed(msg: ChildFailed) -> bytes:
    return encode({"v": PROTOCOL_VERSION, **_fields(msg)})


def decode_child_failed(body: bytes, *, finite: bool = False, check: Check | None = None
                        ) -> ChildFailed:
    d = codec.document(body, finite=finite, check=check)
    return ChildFailed(child_id=codec.text(d, "child_id"), error=codec.text(d, "error"))


def _fields(msg: Any) -> dict[str, Any]:
    """A dataclass's fields, shallow (the encoder walks the values)."""
    return {name: getattr(msg, name) for name in msg.__dataclass_fields__}
