"""Where fnrelay's messages travel: exchanges, queues, headers, routing keys, message types.

The broker declares these and grants each RabbitMQ account what it may use; endpoints and
Executors publish and consume by the same names (docs/protocol.md draws the topology).
"""

from __future__ import annotations

#: Topic exchange the broker publishes task and cancel messages to; routing key = endpoint id.
TASKS_EXCHANGE = "fnrelay.tasks"
#: Topic exchange endpoints publish results, status updates and heartbeats to;
#: routing key = endpoint id.
RESULTS_EXCHANGE = "fnrelay.results"
#: Topic exchange of results for task groups. The broker publishes with routing key = the
#: group id; an endpoint granted a group's direct path with "<endpoint id>.<group id>"
#: (`group_routing_key`), which its topic permission allows for its own id only and which
#: reaches a group's queue only where the broker bound it for that grant. So no other
#: endpoint can put anything into a group's queue.
GROUPS_EXCHANGE = "fnrelay.group-results"
#: Topic exchange an Executor publishes tasks to directly (the direct path, docs/protocol.md):
#: routing key = endpoint id for the tasks (bound to TASKS_EXCHANGE with "*", so the endpoint
#: gets them) and endpoint id + RECORDS_SUFFIX for the broker's records of them, many tasks per
#: message (bound to BROKER_RECORDS_QUEUE). RabbitMQ topic permissions let a task group's
#: account publish only with its own endpoint's id.
SUBMIT_EXCHANGE = "fnrelay.submit"
RECORDS_SUFFIX = ".records"
#: Routing key suffix of an endpoint's results message whose results all went to their groups
#: already (the direct path): "<endpoint id>.forwarded", used when the registration answer
#: names it (`forwarded_routing_key`).
FORWARDED_SUFFIX = ".forwarded"
#: Durable queue the broker consumes from RESULTS_EXCHANGE ("*"): results somebody waits for,
#: status updates, heartbeats.
BROKER_RESULTS_QUEUE = "fnrelay.broker.results"
#: Durable queue the broker consumes from SUBMIT_EXCHANGE ("*" + RECORDS_SUFFIX) and
#: RESULTS_EXCHANGE ("*" + FORWARDED_SUFFIX): the direct path's bookkeeping, which nobody
#: waits for. A queue apart, so that a flood of one user's records (an Executor publishes them
#: faster than the broker writes them) and of its forwarded results never stands in front of
#: another user's results.
BROKER_RECORDS_QUEUE = "fnrelay.broker.records"
#: Every queue the broker consumes, results first.
BROKER_INBOUND_QUEUES = (BROKER_RESULTS_QUEUE, BROKER_RECORDS_QUEUE)
#: Header of an endpoint's results message: every result in it was already published to its
#: task group's queue (the direct path), so the broker records them without forwarding.
FORWARDED_HEADER = "x-fnrelay-forwarded"
#: Fanout exchange and durable queue of messages a consumer could not decode. Consumers
#: republish such a message here with the reason in DEADLETTER_REASON_HEADER, then ack it;
#: a RabbitMQ policy dead-letters other rejected messages of fnrelay's queues here too.
DEADLETTER_EXCHANGE = "fnrelay.deadletter"
DEADLETTER_QUEUE = "fnrelay.deadletter"
DEADLETTER_REASON_HEADER = "x-fnrelay-reason"

#: AMQP message `type` property values; the body of each is decoded by the `decode_*` of
#: fnrelay.wire.messages named here.
MSG_TASKS = "tasks"  # broker -> endpoint, Executor -> endpoint + broker: decode_tasks
MSG_CANCEL = "cancel"  # broker -> endpoint: decode_cancel
MSG_RESULTS = "results"  # endpoint -> broker, broker/endpoint -> group queue: decode_results
MSG_STATUS = "status"  # endpoint -> broker: decode_status
MSG_HEARTBEAT = "heartbeat"  # endpoint -> broker: decode_heartbeat
#: broker -> manager (TASKS_EXCHANGE, routing key control_routing_key(manager)): start a child
#: (decode_start_child).
MSG_START_CHILD = "start-child"
#: manager -> broker (RESULTS_EXCHANGE, routing key = manager id): a child cannot run; fail its
#: unfinished tasks with `error` (decode_child_failed).
MSG_CHILD_FAILED = "child-failed"

CONTENT_TYPE = "application/json"


def group_account(task_group_id: str) -> str:
    """The RabbitMQ account of a task group (made by a broker with per-party accounts): it
    reads the group's queue and, on the direct path, publishes the group's tasks."""
    return f"fnrelay-group-{task_group_id}"


def gc_routing_key(task_group_id: str) -> str:
    """Routing key on GROUPS_EXCHANGE of a group's results in Globus Compute's format (only
    the broker sends them: endpoints may use "<their id>.<group>" keys alone)."""
    return f"gc.{task_group_id}"


def group_routing_key(task_group_id: str, endpoint_id: str | None = None) -> str:
    """Routing key on GROUPS_EXCHANGE: the broker's (no endpoint) or a granted endpoint's."""
    return task_group_id if endpoint_id is None else f"{endpoint_id}.{task_group_id}"


def control_routing_key(endpoint_id: str) -> str:
    """Routing key of a manager's control messages (never matches its task queue's binding)."""
    return f"{endpoint_id}.control"
