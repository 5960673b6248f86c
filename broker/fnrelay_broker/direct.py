"""The direct path's ledger: tasks an Executor published straight to its endpoint.

An Executor granted the direct path (POST /v1/task_groups with its endpoint, see
`Broker.direct_allowed`) publishes its tasks to `fnrelay.submit` with the endpoint's id as
routing key, and RabbitMQ lets only the group's own account do so. The endpoint runs the tasks
while the Executor sends the broker its records of them, many per message (routing key
"<endpoint id>.records"), which are recorded here: no database commit lies on a task's way
out, and the broker's durable queue holds a record until it is committed (the message is acked
after the commit). Should those records never come (the Executor died within the moment it
holds them), the endpoint's results for the broker carry enough to record the tasks:
`record_from_results`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select
from sqlalchemy.orm import Session

from fnrelay.wire import (
    TERMINAL_VALUES,
    ExceptionInfo,
    ResultMessage,
    TaskMessage,
    TaskState,
    decode_record,
    now,
)
from fnrelay_broker import children, metrics, tasks
from fnrelay_broker.db import Database
from fnrelay_broker.models import Endpoint, Task, TaskGroup, TaskHistory
from fnrelay_broker.registry import code_digest, function_id_of

log = logging.getLogger(__name__)

#: History detail of the step a direct-path task starts in.
DETAIL = "published to the endpoint by the Executor (direct path)"
#: ... and of one recorded from its result (the Executor's record never arrived).
FROM_RESULT = ("published to the endpoint by the Executor (direct path); recorded from the "
               "endpoint's result, without its arguments: the Executor's record never arrived")


@dataclass
class _Claim:
    """What a record says of one task; `digest` is the SHA-256 (hex) of its function's code."""

    task_id: str
    function_id: str
    digest: str
    payload: str = ""
    resource_specification: dict[str, Any] = field(default_factory=dict)
    user_endpoint_config: dict[str, Any] = field(default_factory=dict)
    max_retries: int | None = None
    python_version: str | None = None


def record(db: Database, endpoint_id: str, task_group_id: str, msgs: list[TaskMessage],
           results: dict[str, ResultMessage] | None = None,
           arrived: dict[str, float] | None = None) -> set[str]:
    """Record direct-path tasks (already on their way to `endpoint_id`); redelivered ones are
    skipped. A task with its result in `results` (the endpoint's, same endpoint) is written
    finished, in one row and one transaction instead of two; returns the ids of those.
    ValueError if the group's owner may not use the endpoint directly (the message is then
    dead-lettered: RabbitMQ's permission was stale).

    A task whose function code does not hash to its function id is recorded as failed: the
    record says what ran, and the endpoint's result for it is then ignored. `arrived` has when
    each record reached the broker (it is held a moment before it is written): the task's
    received time.
    """
    claims = [_Claim(m.task_id, m.function_id, code_digest(m.function), m.payload,
                     m.resource_specification or {}, m.user_endpoint_config or {},
                     m.max_retries, m.python_version) for m in msgs]
    timings: list[metrics.Timing] = []
    with db.write() as s:
        n, finished = _insert(s, endpoint_id, task_group_id, claims, DETAIL, results, arrived,
                              timings)
    _observe(n, timings, arrived)
    return finished


def record_from_results(db: Database, endpoint_id: str, results: list[ResultMessage]
                        ) -> set[str]:
    """Record the direct-path tasks of `results` from what the endpoint's copy for the broker
    carries (`ResultMessage.record`), for tasks whose Executor's record never arrived; returns
    the ids recorded. Results without a well-formed record, or whose group may not use the
    endpoint directly, are left out (and then ignored, as before)."""
    by_group: dict[str, list[_Claim]] = {}
    for r in results:
        claim = _claim(r)
        if claim is None or not isinstance(r.task_group_id, str):
            continue
        by_group.setdefault(r.task_group_id, []).append(claim)
    recorded: set[str] = set()
    for group_id, claims in by_group.items():
        try:
            with db.write() as s:
                n, _ = _insert(s, endpoint_id, group_id, claims, FROM_RESULT)
            metrics.SUBMITTED.add("direct", n)
        except ValueError as e:
            log.warning("endpoint %s: not recording its results' tasks: %s", endpoint_id, e)
            continue
        recorded.update(c.task_id for c in claims)
    return recorded


# Built once: building a statement per batch (operators, coercions, cache key) was a sixth
# of the ledger's CPU. The owner of a group that granted the endpoint the direct path (so it
# owns the endpoint too), and the endpoint's metadata: an endpoint may not record tasks in its
# owner's other groups, whose Executors would then read its results as the broker's.
_SAME_OWNER = (select(TaskGroup.owner, Endpoint.metadata_)
               .join_from(TaskGroup, Endpoint, TaskGroup.owner == Endpoint.owner)
               .where(TaskGroup.id == bindparam("group"), Endpoint.id == bindparam("endpoint"),
                      TaskGroup.direct_endpoint == Endpoint.id))
#: ... and which of a batch's task ids are recorded already.
_KNOWN = select(Task.id).where(Task.id.in_(bindparam("ids", expanding=True)))


def _observe(n: int, timings: list[metrics.Timing], arrived: dict[str, float] | None) -> None:
    """Count `n` tasks recorded (and the results written with them) once committed; the
    ledger's lag is each record's wait from its arrival to now."""
    metrics.SUBMITTED.add("direct", n)
    metrics.observe(timings)
    t = now()
    metrics.LEDGER_LAG.observe(max(0.0, t - came) for came in (arrived or {}).values())


def _claim(r: ResultMessage) -> _Claim | None:
    """The endpoint's record of `r`'s task, if it is well formed (`wire.decode_record`)."""
    rec = decode_record(r.record)
    if rec is None:
        return None
    return _Claim(r.task_id, rec.function_id, rec.function_sha256, "",
                  rec.resource_specification, rec.user_endpoint_config, rec.max_retries)


def _insert(s: Session, endpoint_id: str, task_group_id: str, claims: list[_Claim],
            detail: str, results: dict[str, ResultMessage] | None = None,
            arrived: dict[str, float] | None = None,
            timings: list[metrics.Timing] | None = None) -> tuple[int, set[str]]:
    """Insert the tasks of `claims` not recorded yet, finished where `results` has their
    result (their times appended to `timings`); returns how many, and the ids written with
    their result. A task is received when its record `arrived` (never later than now), else
    now."""
    t, results, arrived = now(), results or {}, arrived or {}
    conn = s.connection()  # Core, not the ORM: this runs for every batch of records
    same_owner = conn.execute(_SAME_OWNER, {"group": task_group_id,
                                            "endpoint": endpoint_id}).first()
    if same_owner is None or not children.plain(same_owner[1]):
        raise ValueError(f"task group {task_group_id} may not publish tasks to endpoint "
                         f"{endpoint_id} directly")
    owner_id = same_owner[0]
    known = set(conn.scalars(_KNOWN, {"ids": [c.task_id for c in claims]}))
    rows, history = [], []
    finished: set[str] = set()
    for c in claims:
        if c.task_id in known:
            continue
        known.add(c.task_id)
        genuine = function_id_of(owner_id, c.digest) == c.function_id
        status = TaskState.WAITING_FOR_ENDPOINT if genuine else TaskState.FAILED
        r = results.get(c.task_id)
        if r is not None and (not genuine or r.status not in TERMINAL_VALUES):
            r = None
        created = min(t, arrived.get(c.task_id, t))
        rows.append({
            "id": c.task_id, "owner": owner_id, "endpoint_id": endpoint_id,
            "function_id": c.function_id, "task_group_id": task_group_id,
            "status": status.value, "payload": c.payload,
            "resource_specification": c.resource_specification,
            "user_endpoint_config": c.user_endpoint_config,
            "max_retries": c.max_retries, "python_version": c.python_version, "details": {},
            "created": created, "result": None,
            "completed": None if genuine else t,
            "exception": None if genuine else asdict(ExceptionInfo(
                type="ValueError", traceback="",
                message=f"function {c.function_id}: its code does not match its id")),
        })
        history.append({"task_id": c.task_id, "status": "received", "time": created,
                        "detail": ""})
        history.append({"task_id": c.task_id, "status": status.value, "time": created,
                        "detail": detail if genuine else "function code does not match"})
        if r is not None:
            timing = _finish(rows[-1], history, r, t)
            if timings is not None:
                timings.append(timing)
            finished.add(c.task_id)
        if not genuine:
            log.warning("direct task %s: function code does not match id %s", c.task_id,
                        c.function_id)
    if rows:
        insert_rows(conn, Task.__table__, rows)
        insert_rows(conn, TaskHistory.__table__, history)
    return len(rows), finished


_PLANS: dict[tuple[str, tuple[str, ...]], tuple[str, Any, list[tuple[int, Any]]]] = {}


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT `rows` into `table`; every row must have the first one's keys (executemany
    takes its columns from the first: a key only later rows have would be dropped). On
    SQLite, straight to the driver's executemany with the columns' own bind processors
    (SQLAlchemy's per-row parameter handling was a quarter of the ledger's CPU); elsewhere
    through Core, whose executemany batches rows into multi-row INSERTs (psycopg)."""
    if conn.dialect.name != "sqlite" or not rows:
        conn.execute(insert(table), rows)
        return
    keys = tuple(rows[0])
    plan = _PLANS.get((table.name, keys))
    if plan is None:
        compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(keys))
        order = list(compiled.positiontup or keys)
        processors = [(i, p) for i, k in enumerate(order)
                      if (p := table.c[k].type.bind_processor(conn.dialect)) is not None]
        values = itemgetter(*order) if len(order) > 1 else lambda row: (row[order[0]],)
        plan = _PLANS[(table.name, keys)] = (compiled.string, values, processors)
    sql, values, processors = plan
    params = [values(row) for row in rows]
    if processors:
        params = [_processed(list(p), processors) for p in params]
    conn.exec_driver_sql(sql, params)


def _processed(values: list[Any], processors: list[tuple[int, Any]]) -> tuple[Any, ...]:
    for i, process in processors:
        values[i] = process(values[i])
    return tuple(values)


def _finish(row: dict[str, Any], history: list[dict[str, Any]], r: ResultMessage,
            t: float) -> metrics.Timing:
    """Make a new task row finished with result `r`, with the steps `tasks.record_results`
    would add (running, then the outcome) at the times the endpoint reported: the result
    came with the record, or before it, so now is neither."""
    started = tasks.started_at(row["created"], r, t)
    done = tasks.completed_at(row["created"] if started is None else started, r, t)
    history += tasks.steps_before(row["id"], row["status"], started, done)
    history.append({"task_id": row["id"], "status": r.status, "time": done, "detail": ""})
    row.update(status=r.status, completed=done, result=r.result, details=r.details or {},
               exception=asdict(r.exception) if isinstance(r.exception, ExceptionInfo)
               else r.exception)
    return metrics.Timing(r.status, row["created"], started, done)
