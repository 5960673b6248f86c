"""Globus Compute's wire format, translated to and from fnrelay's dataclasses.

The official globus-compute-sdk talks to a fnrelay broker through its /v2 and /v3 routes;
its tasks are recorded with `format = FORMAT_GLOBUS` and run by the endpoint with Globus
Compute's own serialization strategies. What crosses here:

- a submit body (`tasks` keyed by function id, each a packed buffer of serialized args and
  kwargs) becomes fnrelay task entries, checked once so malformed input is the caller's error;
- a task's function and payload concatenated are the packed buffer Globus Compute's
  `ComputeSerializer.unpack_and_deserialize` reads (function, args, kwargs);
- a task record becomes the JSON its Client reads (`completion_t` marks a finished task);
- a ResultMessage becomes the messagepack `Result` its Executor reads from AMQP, and back.

Nothing is deserialized here. The messagepack classes come from `globus_compute_common`
(pydantic only; a dependency of the broker, imported when a Result is packed), so the SDK
side of fnrelay does not need it.
"""

from __future__ import annotations

import uuid
from typing import Any

from fnrelay.wire import pyversion, runtime
from fnrelay.wire.codec import WireError
from fnrelay.wire.messages import FORMAT_GLOBUS, ExceptionInfo, ResultMessage
from fnrelay.wire.states import TaskState

#: fnrelay's task states as Globus Compute's Client names them; the Client takes any state
#: but "success" and "failed" as pending.
_STATUS = {
    TaskState.RECEIVED.value: "received",
    TaskState.WAITING_FOR_ENDPOINT.value: "waiting-for-ep",
    TaskState.WAITING_FOR_NODES.value: "waiting-for-nodes",
    TaskState.RUNNING.value: "running",
    TaskState.SUCCESS.value: "success",
    TaskState.FAILED.value: "failed",
    TaskState.CANCELLED.value: "failed",  # Globus Compute has no cancelled state
}


#: The identifier of Globus Compute's PureSourceTextInspect code strategy.
SOURCE_TAG = "st\n"


def unpack_buffers(packed: str) -> list[str]:
    """The buffers of a Globus Compute packed buffer ("<length>\\n<buffer>" repeated);
    WireError if it is not one."""
    if not isinstance(packed, str):
        raise WireError(f"a packed buffer must be a string, not {type(packed).__name__}")
    out: list[str] = []
    rest = packed
    while rest:
        size, sep, tail = rest.partition("\n")
        if not sep or not size.isdigit() or int(size) > len(tail):
            raise WireError("not a Globus Compute packed buffer (expected '<length>\\n<data>' "
                            "as ComputeSerializer.pack_buffers makes)")
        out.append(tail[: int(size)])
        rest = tail[int(size):]
    return out


def check_packed(packed: str, count: int, what: str) -> str:
    """`packed` if it holds exactly `count` buffers, else WireError naming `what`."""
    try:
        n = len(unpack_buffers(packed))
    except WireError as e:
        raise WireError(f"{what}: {e}") from None
    if n != count:
        raise WireError(f"{what}: a packed buffer of {count} serialized value(s) expected, "
                        f"got {n}")
    return packed


def task_buffer(function: str, payload: str) -> str:
    """What `ComputeSerializer.unpack_and_deserialize` reads: the function, args, kwargs."""
    return function + payload


def _uuid(value: Any, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise WireError(f"{what} must be a UUID, not {str(value)[:80]!r}") from None


def _obj(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(f"{key!r} must be an object, not {type(value).__name__}")
    return value


def result_serializers(body: dict[str, Any]) -> list[str]:
    value = body.get("result_serializers") or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise WireError("'result_serializers' must be a list of import paths (strings)")
    return value


def submit_entries(body: Any) -> list[dict[str, Any]]:
    """fnrelay task entries (`fnrelay.client.task_entry`'s keys, plus `format` and
    `result_serializers`) of a Globus Compute submit body, in its order; WireError for a
    body the official SDK would not send."""
    if not isinstance(body, dict):
        raise WireError("the submit body must be a JSON object")
    tasks = body.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise WireError("'tasks' must map function ids to lists of payloads")
    spec, config = _obj(body, "resource_specification"), _obj(body, "user_endpoint_config")
    serializers = result_serializers(body)
    user_runtime = runtime.check(body.get("user_runtime"))
    entries: list[dict[str, Any]] = []
    for fid, payloads in tasks.items():
        function_id = _uuid(fid, "a function id")
        if not isinstance(payloads, list) or not payloads:
            raise WireError(f"tasks[{fid!r}] must be a non-empty list of payloads")
        for i, payload in enumerate(payloads):
            check_packed(payload, 2, f"tasks[{fid!r}][{i}] (serialized args and kwargs)")
            entries.append({"function_id": function_id, "payload": payload,
                            "resource_specification": spec, "user_endpoint_config": config,
                            "max_retries": None, "format": FORMAT_GLOBUS,
                            "result_serializers": serializers, "user_runtime": user_runtime,
                            "python_version": pyversion.of_user_runtime(user_runtime)})
    return entries


def submit_answer(entries: list[dict[str, Any]], task_ids: list[str], task_group_id: str,
                  endpoint_id: str, request_id: str) -> dict[str, Any]:
    """The submit answer the official SDK reads: task ids keyed by function id."""
    by_function: dict[str, list[str]] = {}
    for entry, tid in zip(entries, task_ids, strict=True):
        by_function.setdefault(entry["function_id"], []).append(tid)
    return {"request_id": request_id, "task_group_id": task_group_id,
            "endpoint_id": endpoint_id, "tasks": by_function}


def source_code(name: str, source: str) -> str:
    """register_source_code's source text as the packed buffer Globus Compute's endpoint
    reads: one buffer of its PureSourceTextInspect strategy ("st\\n<name>:<source>"), which
    runs `source` and calls its `name`."""
    if not name.isidentifier():
        raise WireError(f"'function_name' must name a function in the source, not {name!r}")
    buffer = f"{SOURCE_TAG}{name}:{source}"
    return f"{len(buffer)}\n{buffer}"


def function_code(body: Any) -> tuple[str, str, str | None]:
    """(name, serialized code, description) of a /v2 or /v3 function registration."""
    if not isinstance(body, dict):
        raise WireError("the function registration must be a JSON object")
    name, code = body.get("function_name"), body.get("function_code")
    if not isinstance(name, str) or not isinstance(code, str) or not code:
        raise WireError("'function_name' and 'function_code' must be strings")
    for key in ("public", "group", "ha_endpoint_id"):
        if body.get(key):
            raise WireError(f"{key!r} is not supported by a fnrelay broker: functions are "
                            "their owner's (share an endpoint instead, see docs/security.md)")
    if body.get("serialized", True) is False:
        code = source_code(name, code)
    check_packed(code, 1, "function_code")
    description = body.get("description")
    return name, code, description if isinstance(description, str) else None


def error_text(exc: ExceptionInfo | dict[str, Any] | None, status: str) -> str:
    """The remote failure as Globus Compute shows it (TaskExecutionFailed's text)."""
    if exc is None:
        return "the task was cancelled" if status == TaskState.CANCELLED.value else \
            "the task failed without an exception"
    info = exc if isinstance(exc, ExceptionInfo) else ExceptionInfo.from_dict(exc)
    return info.traceback or f"{info.type}: {info.message}"


def task_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A fnrelay task record (`tasks.task_record`) as Globus Compute's /v2/tasks answers it:
    `completion_t` only once it finished, then `result` (serialized) or `exception` (text)."""
    status = rec["status"]
    out: dict[str, Any] = {"task_id": rec["task_id"], "status": _STATUS.get(status, status),
                           "task_group_id": rec.get("task_group_id"),
                           "details": rec.get("details") or {}}
    if rec.get("pending", True):
        return out
    out["completion_t"] = str(rec.get("completed") or "")
    if status == TaskState.SUCCESS.value and rec.get("result") is not None:
        out["result"] = rec["result"]
    else:
        out["exception"] = error_text(rec.get("exception"), status)
    return out


def pack_result(r: ResultMessage) -> bytes:
    """A finished task's result as the messagepack `Result` the official Executor reads."""
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Result
    from globus_compute_common.messagepack.message_types.result import ResultErrorDetails

    if r.status == TaskState.SUCCESS.value and r.result is not None:
        return messagepack.pack(Result(task_id=uuid.UUID(r.task_id), data=r.result,
                                       details=r.details or None))
    text = error_text(r.exception, r.status)
    code = "CANCELLED" if r.status == TaskState.CANCELLED.value else "EXECUTION_FAILED"
    return messagepack.pack(Result(
        task_id=uuid.UUID(r.task_id), data=text, details=r.details or None,
        error_details=ResultErrorDetails(
            code=code, user_message=text.strip().splitlines()[-1] if text.strip() else code)))


def unpack_result(body: bytes, task_group_id: str | None = None) -> ResultMessage:
    """A messagepack `Result` as a ResultMessage (its text becomes the exception's
    traceback when it is an error); WireError for anything else."""
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Result

    try:
        msg = messagepack.unpack(body)
    except Exception as e:  # noqa: BLE001 - any decoding failure is a malformed message
        raise WireError(f"not a Globus Compute message: {e}") from None
    if not isinstance(msg, Result):
        raise WireError(f"a Result expected, not {type(msg).__name__}")
    details = {**(msg.details or {}), **_worker_times(msg.task_statuses or [])}
    if msg.error_details is None:
        return ResultMessage(task_id=str(msg.task_id), status=TaskState.SUCCESS.value,
                             result=msg.data, details=details, task_group_id=task_group_id)
    exc = ExceptionInfo(type=msg.error_details.code, message=msg.error_details.user_message,
                        traceback=msg.data)
    return ResultMessage(task_id=str(msg.task_id), status=TaskState.FAILED.value,
                         exception=exc, details=details, task_group_id=task_group_id)


def _worker_times(transitions: list[Any]) -> dict[str, float]:
    """`started` and `completed` (seconds) from a Result's execution-start and -end
    transitions (nanoseconds), where fnrelay's endpoints report them: the task's history
    then shows when it ran."""
    names = {"execution-start": "started", "execution-end": "completed"}
    return {names[t.state.value]: t.timestamp / 1e9 for t in transitions
            if t.state.value in names}


# --- the official endpoint's AMQP messages ---------------------------------------------------
#: AMQP `type` of what an official endpoint publishes: the broker names it in the publish
#: arguments it hands out (`queue_publish_kwargs`), as GC's service routes by queue instead.
MSG_GC_RESULT = "gc-result"
MSG_GC_STATUS = "gc-status"


def pack_task(task_id: str, function_id: str, function: str, payload: str,
              resource_specification: dict[str, Any], result_serializers: list[str],
              ) -> tuple[bytes, dict[str, Any]]:
    """(body, headers) of one task for an official endpoint: a messagepack `Task` whose
    buffer is the function, args and kwargs, and the headers its interchange reads."""
    import json

    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Task

    body = messagepack.pack(Task(task_id=uuid.UUID(task_id),
                                 task_buffer=task_buffer(function, payload)))
    return body, {"task_uuid": task_id, "function_uuid": function_id,
                  "resource_specification": json.dumps(resource_specification or None),
                  "result_serializers": list(result_serializers)}


def status_report(body: bytes) -> dict[str, Any]:
    """The `global_state` of a messagepack `EPStatusReport` (an official endpoint's
    heartbeat; `heartbeat_period` 0 means it is stopping); WireError for anything else."""
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import EPStatusReport

    try:
        msg = messagepack.unpack(body)
    except Exception as e:  # noqa: BLE001 - any decoding failure is a malformed message
        raise WireError(f"not a Globus Compute message: {e}") from None
    if not isinstance(msg, EPStatusReport):
        raise WireError(f"an EPStatusReport expected, not {type(msg).__name__}")
    return dict(msg.global_state)


def endpoint_registration(body: Any) -> tuple[str, bool, dict[str, Any], list[str] | None]:
    """(name, multi_user, metadata, allowed_functions) of an official endpoint's
    `POST`/`PUT /v3/endpoints` body; WireError for what fnrelay cannot honour (a
    high-assurance endpoint, an auth policy) rather than registering something else
    silently."""
    if not isinstance(body, dict):
        raise WireError("the endpoint registration must be a JSON object")
    name = body.get("endpoint_name")
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise WireError("'endpoint_name' must be a non-empty string of at most 128 "
                        "characters (as globus-compute-endpoint names are)")
    # `public` (GC's configure writes true) has no counterpart and is ignored: who may use
    # the endpoint is the multi_user flag's and its identity mapping's business here.
    for key, why in (("high_assurance", "there are no high-assurance policies here"),
                     ("authentication_policy", "fnrelay users sign in with fnrelay tokens"),
                     ("subscription_uuid", "there are no Globus subscriptions here")):
        if body.get(key):
            raise WireError(f"{key!r} is not supported by a fnrelay broker: {why}")
    allowed = body.get("allowed_functions")
    if allowed is not None and (not isinstance(allowed, list)
                                or not all(isinstance(f, str) for f in allowed)):
        raise WireError("'allowed_functions' must be a list of function ids")
    metadata = body.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise WireError("'metadata' must be an object")
    return name.strip(), bool(body.get("multi_user")), metadata, allowed
