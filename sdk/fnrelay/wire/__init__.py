"""The one wire format of fnrelay: task states, AMQP names and the messages that cross them.

The SDK, the broker and the endpoint all import this module, so a message is defined once.
Bodies are JSON (UTF-8); serialized Python values inside them are the header-tagged strings of
:mod:`fnrelay.serialize`. Every AMQP message carries several items (tasks, results, status
updates) so that one publish and one confirm serve many tasks.

See docs/protocol.md for the REST API and the AMQP topology in prose.
"""

from __future__ import annotations

import enum
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1

# --- AMQP topology ---------------------------------------------------------------------------
#: Topic exchange the broker publishes task and cancel messages to; routing key = endpoint id.
TASKS_EXCHANGE = "fnrelay.tasks"
#: Topic exchange endpoints publish results, status updates and heartbeats to;
#: routing key = endpoint id.
RESULTS_EXCHANGE = "fnrelay.results"
#: Topic exchange of results for task groups. The broker publishes with routing key = the
#: group id; an endpoint granted a group's direct path with "<endpoint id>.<group id>"
#: (`group_routing_key`), which its topic permission allows for its own id only and which
#: reaches a group's queue only where the broker bound it for that grant. So no other
#: endpoint can put anything into a group's queue. (The direct exchange "fnrelay.groups" of
#: earlier brokers let any endpoint account publish to every group.)
GROUPS_EXCHANGE = "fnrelay.group-results"
#: Topic exchange an Executor publishes tasks to directly (the direct path, docs/protocol.md):
#: routing key = endpoint id for the tasks (bound to TASKS_EXCHANGE with "*", so the endpoint
#: gets them) and endpoint id + RECORDS_SUFFIX for the broker's records of them, many tasks per
#: message (bound to BROKER_RESULTS_QUEUE). RabbitMQ topic permissions let a task group's
#: account publish only with its own endpoint's id.
SUBMIT_EXCHANGE = "fnrelay.submit"
RECORDS_SUFFIX = ".records"
#: Durable queue the broker consumes from RESULTS_EXCHANGE ("#") and SUBMIT_EXCHANGE
#: ("*" + RECORDS_SUFFIX).
BROKER_RESULTS_QUEUE = "fnrelay.broker.results"
#: Header of an endpoint's results message: every result in it was already published to its
#: task group's queue (the direct path), so the broker records them without forwarding.
FORWARDED_HEADER = "x-fnrelay-forwarded"
#: Fanout exchange and durable queue of messages a consumer could not decode. Consumers
#: republish such a message here with the reason in DEADLETTER_REASON_HEADER, then ack it;
#: a RabbitMQ policy dead-letters other rejected messages of fnrelay's queues here too.
DEADLETTER_EXCHANGE = "fnrelay.deadletter"
DEADLETTER_QUEUE = "fnrelay.deadletter"
DEADLETTER_REASON_HEADER = "x-fnrelay-reason"


def group_account(task_group_id: str) -> str:
    """The RabbitMQ account of a task group (made by a broker with per-party accounts): it
    reads the group's queue and, on the direct path, publishes the group's tasks."""
    return f"fnrelay-group-{task_group_id}"


def group_routing_key(task_group_id: str, endpoint_id: str | None = None) -> str:
    """Routing key on GROUPS_EXCHANGE: the broker's (no endpoint) or a granted endpoint's."""
    return task_group_id if endpoint_id is None else f"{endpoint_id}.{task_group_id}"


#: AMQP message `type` property values.
MSG_TASKS = "tasks"  # broker -> endpoint: TaskBatch
MSG_CANCEL = "cancel"  # broker -> endpoint: {"task_ids": [...]}
MSG_RESULTS = "results"  # endpoint -> broker, broker -> group queue: ResultBatch
MSG_STATUS = "status"  # endpoint -> broker: {"updates": [StatusUpdate...]}
MSG_HEARTBEAT = "heartbeat"  # endpoint -> broker: Heartbeat

CONTENT_TYPE = "application/json"


# --- Task states -------------------------------------------------------------------------------
class TaskState(str, enum.Enum):
    """Lifecycle of a task. Transitions allowed are in TRANSITIONS."""

    RECEIVED = "received"
    WAITING_FOR_ENDPOINT = "waiting-for-endpoint"
    WAITING_FOR_NODES = "waiting-for-nodes"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:  # so f-strings and JSON show the wire value
        return self.value


TERMINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED})
#: The same as wire values (database columns, JSON): what a task's status string is compared to.
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATES)

_S = TaskState
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _S.RECEIVED: frozenset({_S.WAITING_FOR_ENDPOINT, _S.FAILED, _S.CANCELLED}),
    # A result may overtake the endpoint's "running" update, so terminal states are reachable
    # from every live state. Going back to waiting-for-endpoint is a retry.
    _S.WAITING_FOR_ENDPOINT: frozenset(
        {_S.WAITING_FOR_NODES, _S.RUNNING, _S.SUCCESS, _S.FAILED, _S.CANCELLED}
    ),
    _S.WAITING_FOR_NODES: frozenset(
        {_S.RUNNING, _S.WAITING_FOR_ENDPOINT, _S.SUCCESS, _S.FAILED, _S.CANCELLED}
    ),
    _S.RUNNING: frozenset({_S.WAITING_FOR_ENDPOINT, _S.SUCCESS, _S.FAILED, _S.CANCELLED}),
    _S.SUCCESS: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}


def can_transition(old: TaskState | str, new: TaskState | str) -> bool:
    """True if a task in state `old` may move to `new`."""
    return TaskState(new) in TRANSITIONS[TaskState(old)]


# --- Messages ------------------------------------------------------------------------------------
def now() -> float:
    """Wall-clock time in seconds since the epoch: the one time format on the wire."""
    return time.time()


def new_id() -> str:
    return str(uuid.uuid4())


def new_task_id() -> str:
    """A task id: a UUID whose first 48 bits are the time in milliseconds (version 7, RFC
    9562; `uuid.uuid7` from Python 3.14), then 74 random bits. Task ids key B-tree indexes
    in the broker's database and the endpoint's journal: ids in creation order land on the
    same few pages, where random ones dirtied a page per task (~30 % of the ledger's work)."""
    if hasattr(uuid, "uuid7"):
        return str(uuid.uuid7())
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = ((ms & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
             | 0b10 << 62 | rand & (1 << 62) - 1)
    return str(uuid.UUID(int=value))


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


@dataclass
class ExceptionInfo:
    """A remote failure: enough to re-raise it locally or show it."""

    type: str  # qualified name, e.g. "builtins.ZeroDivisionError"
    message: str
    traceback: str
    serialized: str | None = None  # the exception object itself, when it could be serialized


@dataclass
class ResultMessage:
    """The outcome of one task, from the endpoint (and forwarded to the task group)."""

    task_id: str
    status: str  # "success" | "failed" | "cancelled"
    result: str | None = None  # serialized value when status == success
    exception: ExceptionInfo | None = None
    details: dict[str, Any] = field(default_factory=dict)  # python/dill versions, times, worker
    task_group_id: str | None = None
    #: Direct-path tasks only, in the endpoint's copy for the broker: what the broker needs to
    #: record the task if the Executor's record of it never arrived: function_id,
    #: function_sha256, resource_specification, user_endpoint_config, max_retries.
    record: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultMessage:
        exc = d.get("exception")
        return cls(
            task_id=d["task_id"],
            status=d["status"],
            result=d.get("result"),
            exception=ExceptionInfo(**known_fields(ExceptionInfo, exc)) if exc else None,
            details=d.get("details") or {},
            task_group_id=d.get("task_group_id"),
            record=d.get("record"),
        )


@dataclass
class StatusUpdate:
    """A non-terminal state change seen by the endpoint (e.g. running, waiting-for-nodes)."""

    task_id: str
    status: str
    time: float = field(default_factory=now)
    detail: str = ""


@dataclass
class Heartbeat:
    endpoint_id: str
    time: float = field(default_factory=now)
    info: dict[str, Any] = field(default_factory=dict)


def encode(obj: Any) -> bytes:
    """JSON-encode a message body (dataclasses become dicts)."""

    def default(o: Any) -> Any:
        fields = getattr(o, "__dataclass_fields__", None)
        if fields is not None:  # shallow: json walks the values (asdict would copy them all)
            return {name: getattr(o, name) for name in fields}
        if isinstance(o, enum.Enum):
            return o.value
        raise TypeError(f"cannot encode {type(o).__name__} in a message")

    return json.dumps(obj, default=default, separators=(",", ":")).encode()


def decode(body: bytes, *, finite: bool = False) -> Any:
    """Decode a message body; raises ValueError on malformed input. With `finite`, NaN,
    Infinity and floats beyond range (which Python's json reads and writes) come out as None:
    a database's JSON (PostgreSQL's) and JSON responses have no such numbers."""
    try:
        if finite:
            return json.loads(body, parse_constant=_none, parse_float=_finite_or_none)
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed fnrelay message: {e}") from e
    except RecursionError as e:  # not a ValueError: a consumer would take it for its own bug
        raise ValueError("malformed fnrelay message: nested too deeply") from e


def _none(_constant: str) -> None:
    return None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _items(body: bytes, key: str) -> list[dict[str, Any]]:
    """The list of objects under `key`; ValueError for any other shape, so a consumer needs
    to catch one error type to reject a malformed message."""
    doc = decode(body)
    items = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"malformed fnrelay message: '{key}' must be a list of objects")
    return items


def known_fields(cls: Any, item: dict[str, Any]) -> dict[str, Any]:
    """`item` without the keys `cls` does not know: newer peers may send more fields."""
    names = cls.__dataclass_fields__
    return {k: v for k, v in item.items() if k in names}


def _build(cls: Any, item: dict[str, Any]) -> Any:
    try:
        item = known_fields(cls, item)
        return cls.from_dict(item) if hasattr(cls, "from_dict") else cls(**item)
    except (TypeError, KeyError) as e:
        raise ValueError(f"malformed fnrelay message: bad {cls.__name__}: {e}") from e


def encode_tasks(tasks: list[TaskMessage]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "tasks": tasks})


def decode_tasks(body: bytes) -> list[TaskMessage]:
    return [_build(TaskMessage, t) for t in _items(body, "tasks")]


def encode_results(results: list[ResultMessage]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "results": results})


def decode_results(body: bytes) -> list[ResultMessage]:
    return [_build(ResultMessage, r) for r in _items(body, "results")]


def encode_status(updates: list[StatusUpdate]) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "updates": updates})


def decode_status(body: bytes) -> list[StatusUpdate]:
    return [_build(StatusUpdate, u) for u in _items(body, "updates")]


# --- Multi-user endpoints ----------------------------------------------------------------------
#: broker -> manager (TASKS_EXCHANGE, routing key control_routing_key(manager)): start a child.
MSG_START_CHILD = "start-child"
#: manager -> broker (RESULTS_EXCHANGE, routing key = manager id): a child cannot run; fail its
#: unfinished tasks with `error`.
MSG_CHILD_FAILED = "child-failed"


def control_routing_key(endpoint_id: str) -> str:
    """Routing key of a manager's control messages (never matches its task queue's binding)."""
    return f"{endpoint_id}.control"


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


@dataclass
class ChildFailed:
    """A manager could not run a child (identity refused, config invalid, start failed)."""

    child_id: str
    error: str
