"""The wire: every message and record that crosses a process boundary, typed, decoded once.

The SDK, the broker, the endpoint and the wrappers import it, so the contract is written in
one place and nobody restates it:

- `topology`: exchanges, queues, headers, routing keys and message types (AMQP names);
- `states`: TaskState and its transitions;
- `messages`: each message and record as a dataclass, its encoder and its typed decoder;
  decoders raise `WireError` (a ValueError) for anything malformed and ignore unknown keys;
- `codec`: JSON in and out, the field checks, WireError;
- `ids`: task ids, UUID checks and the wire's time;
- `runtime`: `user_runtime`, what a submitting SDK reports of itself (checked, bounded);
- `names`: environment variables, sandbox files and limits shared outside AMQP messages.

Everything is re-exported here (`from fnrelay import wire; wire.TaskMessage`). See
docs/protocol.md for the REST API and the AMQP topology in prose.

A second wire format, Globus Compute's (its REST bodies, and messagepack from the
`globus_compute_common` package), lives beside this one in `fnrelay.wire.globus`, translating
its messages to and from these same dataclasses, so the broker and the endpoint keep one model
of a task and a result. A payload's format follows from the route it came by and is recorded
on the task (`TaskMessage.format`), never guessed from a serialization tag: fnrelay's and
Globus Compute's tags collide. This module is fnrelay's own format only.
"""

from __future__ import annotations

from fnrelay.wire.codec import WireError, decode, encode
from fnrelay.wire.ids import is_uuid, new_id, new_task_id, now
from fnrelay.wire.messages import (
    FORMAT_FNRELAY,
    FORMAT_GLOBUS,
    FORMATS,
    PROTOCOL_VERSION,
    ChildFailed,
    DirectRecord,
    ExceptionInfo,
    Heartbeat,
    ResultMessage,
    StartChild,
    StatusUpdate,
    TaskMessage,
    canonical_config,
    decode_cancel,
    decode_child_failed,
    decode_direct_tasks,
    decode_heartbeat,
    decode_record,
    decode_result,
    decode_results,
    decode_start_child,
    decode_status,
    decode_task,
    decode_tasks,
    encode_cancel,
    encode_child_failed,
    encode_heartbeat,
    encode_results,
    encode_start_child,
    encode_status,
    encode_tasks,
    task_from_entry,
)
from fnrelay.wire.names import (
    ENV_MPI_PREFIX,
    ENV_NUM_NODES,
    ENV_NUM_RANKS,
    ENV_TASK_SANDBOX,
    EXIT_STATUS_FILE,
    MAX_RETRIES_CAP,
)
from fnrelay.wire.states import (
    TERMINAL_STATES,
    TERMINAL_VALUES,
    TRANSITIONS,
    TaskState,
    can_transition,
)
from fnrelay.wire.topology import (
    BROKER_INBOUND_QUEUES,
    BROKER_RECORDS_QUEUE,
    BROKER_RESULTS_QUEUE,
    CONTENT_TYPE,
    DEADLETTER_EXCHANGE,
    DEADLETTER_QUEUE,
    DEADLETTER_REASON_HEADER,
    FORWARDED_HEADER,
    FORWARDED_SUFFIX,
    GROUPS_EXCHANGE,
    MSG_CANCEL,
    MSG_CHILD_FAILED,
    MSG_HEARTBEAT,
    MSG_RESULTS,
    MSG_START_CHILD,
    MSG_STATUS,
    MSG_TASKS,
    RECORDS_SUFFIX,
    RESULTS_EXCHANGE,
    SUBMIT_EXCHANGE,
    TASKS_EXCHANGE,
    control_routing_key,
    gc_routing_key,
    group_account,
    group_routing_key,
)

__all__ = [
    "BROKER_INBOUND_QUEUES", "BROKER_RECORDS_QUEUE", "BROKER_RESULTS_QUEUE", "CONTENT_TYPE",
    "DEADLETTER_EXCHANGE", "DEADLETTER_QUEUE",
    "DEADLETTER_REASON_HEADER", "ENV_MPI_PREFIX", "ENV_NUM_NODES", "ENV_NUM_RANKS",
    "FORMATS", "FORMAT_FNRELAY", "FORMAT_GLOBUS",
    "ENV_TASK_SANDBOX", "EXIT_STATUS_FILE", "FORWARDED_HEADER", "FORWARDED_SUFFIX",
    "GROUPS_EXCHANGE", "MSG_CANCEL",
    "MSG_CHILD_FAILED", "MSG_HEARTBEAT", "MSG_RESULTS", "MSG_START_CHILD", "MSG_STATUS",
    "MAX_RETRIES_CAP", "MSG_TASKS", "PROTOCOL_VERSION", "RECORDS_SUFFIX", "RESULTS_EXCHANGE",
    "SUBMIT_EXCHANGE", "TASKS_EXCHANGE", "TERMINAL_STATES", "TERMINAL_VALUES", "TRANSITIONS",
    "ChildFailed", "DirectRecord", "ExceptionInfo", "Heartbeat", "ResultMessage", "StartChild",
    "StatusUpdate", "TaskMessage", "TaskState", "WireError", "can_transition", "canonical_config",
    "control_routing_key", "decode", "decode_cancel", "decode_child_failed", "decode_direct_tasks",
    "gc_routing_key",
    "decode_heartbeat", "decode_record", "decode_result", "decode_results", "decode_start_child",
    "decode_status", "decode_task", "decode_tasks", "encode", "encode_cancel",
    "encode_child_failed", "encode_heartbeat", "encode_results", "encode_start_child",
    "encode_status", "encode_tasks", "group_account", "group_routing_key", "is_uuid", "new_id",
    "new_task_id", "now", "task_from_entry",
]
