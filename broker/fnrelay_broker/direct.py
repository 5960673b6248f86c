"""The direct path's ledger: tasks an Executor published straight to its endpoint.

An Executor granted the direct path (POST /v1/task_groups with its endpoint, see
`Broker.direct_allowed`) publishes its tasks to `fnrelay.submit`. RabbitMQ routes each message
both to the endpoint's queue and to the broker's queue, and only for the group's own account
with the one routing key it was granted. The endpoint runs the tasks while the broker records
them here: no database commit lies on a task's way out, and the broker's durable queue holds
the record until it is committed (the message is acked after the commit).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlalchemy import insert, select

from fnrelay.protocol import ExceptionInfo, TaskMessage, TaskState, now
from fnrelay_broker import children
from fnrelay_broker.db import Database
from fnrelay_broker.models import Endpoint, Task, TaskGroup, TaskHistory
from fnrelay_broker.registry import function_id_for

log = logging.getLogger(__name__)

#: History detail of the step a direct-path task starts in.
DETAIL = "published to the endpoint by the Executor (direct path)"


def record(db: Database, endpoint_id: str, task_group_id: str, msgs: list[TaskMessage]) -> int:
    """Record direct-path tasks (already on their way to `endpoint_id`); returns how many are
    new. Redelivered ones are skipped. ValueError if the group's owner may not use the
    endpoint directly (the message is then dead-lettered: RabbitMQ's permission was stale).

    A task whose function code does not hash to its function id is recorded as failed: the
    record says what ran, and the endpoint's result for it is then ignored.
    """
    t = now()
    with db.write() as s:
        group = s.get(TaskGroup, task_group_id)
        ep = s.get(Endpoint, endpoint_id)
        if (group is None or ep is None or ep.owner != group.owner
                or children.is_multi_user(ep) or children.parent_of(ep) is not None):
            raise ValueError(f"task group {task_group_id} may not publish tasks to endpoint "
                             f"{endpoint_id} directly")
        ids = [m.task_id for m in msgs]
        known = set(s.scalars(select(Task.id).where(Task.id.in_(ids))))
        rows, history = [], []
        for m in msgs:
            if m.task_id in known:
                continue
            known.add(m.task_id)
            genuine = function_id_for(group.owner, m.function)[0] == m.function_id
            status = TaskState.WAITING_FOR_ENDPOINT if genuine else TaskState.FAILED
            rows.append({
                "id": m.task_id, "owner": group.owner, "endpoint_id": endpoint_id,
                "function_id": m.function_id, "task_group_id": task_group_id,
                "status": status.value, "payload": m.payload,
                "resource_specification": m.resource_specification or {},
                "user_endpoint_config": m.user_endpoint_config or {},
                "max_retries": m.max_retries, "details": {}, "created": t,
                "completed": None if genuine else t,
                "exception": None if genuine else asdict(ExceptionInfo(
                    type="ValueError", traceback="",
                    message=f"function {m.function_id}: its code does not match its id")),
            })
            history.append({"task_id": m.task_id, "status": "received", "time": t,
                            "detail": ""})
            history.append({"task_id": m.task_id, "status": status.value, "time": t,
                            "detail": DETAIL if genuine else "function code does not match"})
            if not genuine:
                log.warning("direct task %s: function code does not match id %s", m.task_id,
                            m.function_id)
        if rows:
            conn = s.connection()
            conn.execute(insert(Task.__table__), rows)
            conn.execute(insert(TaskHistory.__table__), history)
    return len(rows)
