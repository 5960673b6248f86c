"""The task lifecycle in the database: submit, records, cancel, results, status, outbox.

Every change to a task's state appends a history row in the same transaction, and every
message a change implies is an outbox row in that transaction too (published later).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fnrelay import chunks
from fnrelay.wire import (
    FORMAT_FNRELAY,
    TERMINAL_VALUES,
    ExceptionInfo,
    Heartbeat,
    ResultMessage,
    StatusUpdate,
    TaskMessage,
    TaskState,
    can_transition,
    new_task_id,
    now,
    task_from_entry,
)
from fnrelay_broker import children, endpoint_cap, gc_endpoints, metrics, sharing
from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.children import is_multi_user
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError, not_found
from fnrelay_broker.models import (
    OPEN_TASK,
    Endpoint,
    Function,
    Outbox,
    Submission,
    Task,
    TaskHistory,
)
from fnrelay_broker.registry import ensure_task_group, missing_endpoint

log = logging.getLogger(__name__)

CHUNK = 500  # ids per IN (...) clause


def _is_terminal(status: str) -> bool:
    return status in TERMINAL_VALUES


# --- submit --------------------------------------------------------------------------------------
@dataclass
class Handoff:
    """Tasks just committed with their outbox rows, passed straight to the publisher.

    It saves the publisher reading back what the request already holds, and a poll round
    trip; the outbox rows stay the guarantee: the publisher sends only rows it can still
    claim, and anything a hand-off misses goes out with the next outbox round.
    """

    endpoint_id: str
    outbox_ids: list[int]
    messages: list[TaskMessage]


def _stored_answer(db: Database, user_id: str, key: str) -> dict[str, Any] | None:
    with db.read() as s:
        return s.scalar(
            select(Submission.response).where(Submission.user_id == user_id, Submission.key == key)
        )


#: Seconds a client refused by the quota is told to wait before it tries again.
QUOTA_RETRY_AFTER = 2


def open_tasks(s: Session, user_id: str) -> int:
    """How many of the user's tasks are not finished (through ix_tasks_owner_open)."""
    return int(s.scalar(select(func.count()).select_from(Task).where(
        Task.owner == user_id, text(OPEN_TASK))) or 0)


def check_quota(s: Session, user: CurrentUser, adding: int, limit: int) -> None:
    """ApiError 429 if `adding` more tasks would pass the user's quota of unfinished tasks.

    A user's submits count one at a time: SQLite's write transactions are serial already;
    on PostgreSQL a transaction-scoped advisory lock on the user makes them so (else N
    concurrent requests would all count the same total and pass the limit N-1 times over)."""
    endpoint_cap.lock_user(s, user.id)
    current = open_tasks(s, user.id)
    if current + adding > limit:
        raise ApiError(
            429, f"too many unfinished tasks: you have {current} and submitted {adding}, "
                 f"above the broker's limit of {limit} per user; submit again when some have "
                 "finished (nothing of this request was stored)",
            retry_after=QUOTA_RETRY_AFTER)


def submit(
    db: Database,
    user: CurrentUser,
    idempotency_key: str,
    endpoint_id: str,
    task_group_id: str | None,
    tasks: list[dict[str, Any]],
    handoff: Callable[[Handoff], None] | None = None,
    max_queued: int = 0,
    max_endpoints: int = 0,
) -> dict[str, Any]:
    """Store tasks, their history and outbox rows, and the answer, in one transaction.

    A repeated idempotency key returns the stored answer and creates nothing; two concurrent
    identical requests meet at the unique (user, key) constraint and the loser returns the
    winner's answer. After the commit, `handoff` gets the new tasks' messages, so the
    publisher can send them without reading them back (see `Handoff`). With `max_queued`,
    a submit that would leave the user more unfinished tasks than that is refused whole
    (429, retryable: nothing was stored); with `max_endpoints`, one that would need a new
    child endpoint beyond the user's cap is refused whole too (403).
    """
    try:
        with db.write() as s:
            prev = s.scalar(
                select(Submission.response).where(
                    Submission.user_id == user.id, Submission.key == idempotency_key
                )
            )
            if prev is not None:
                return prev
            if max_queued:
                check_quota(s, user, len(tasks), max_queued)
            ep = s.get(Endpoint, endpoint_id)
            multi_user = ep is not None and is_multi_user(ep)
            shared = (ep is not None and ep.owner != user.id and not multi_user
                      and sharing.is_shared(ep))
            if ep is None or (ep.owner != user.id and not multi_user and not shared) or (
                    ep.owner != user.id and not gc_endpoints.open_to_others(ep.metadata_)):
                raise missing_endpoint(s, user, endpoint_id)
            wanted = {t["function_id"] for t in tasks}
            bodies: dict[str, str] = {}
            formats: dict[str, str] = {}
            for fid, body, fmt in s.execute(
                    select(Function.id, Function.body, Function.format)
                    .where(Function.id.in_(wanted), Function.owner == user.id)):
                bodies[fid], formats[fid] = body, fmt
            missing = sorted(wanted - set(bodies))
            if missing:
                raise not_found("function", ", ".join(missing))
            _check_formats(tasks, formats)
            if gc_endpoints.is_gc(ep.metadata_):
                gc_endpoints.check_formats(tasks)
            if shared:
                sharing.check_allowed(s, ep, wanted)
                sharing.check_guest_tasks(ep, tasks)
            group_id = ensure_task_group(s, user, task_group_id)
            t = now()
            ids = [new_task_id() for _ in tasks]
            routes = (children.route(s, ep, user, tasks, t, max_endpoints) if multi_user
                      else [endpoint_id] * len(tasks))
            conn = s.connection()  # SQL Core for the inserts: the ORM's bulk path costs more
            conn.execute(
                insert(Task.__table__),
                [
                    {
                        "id": tid,
                        "owner": user.id,
                        "endpoint_id": route,
                        "function_id": spec["function_id"],
                        "task_group_id": group_id,
                        "status": TaskState.RECEIVED.value,
                        "payload": spec["payload"],
                        "resource_specification": spec.get("resource_specification") or {},
                        "user_endpoint_config": spec.get("user_endpoint_config") or {},
                        "max_retries": spec.get("max_retries"),
                        "format": spec.get("format") or FORMAT_FNRELAY,
                        "result_serializers": spec.get("result_serializers") or None,
                        "python_version": spec.get("python_version"),
                        "details": submitted_details(spec),
                        "created": t,
                    }
                    for tid, spec, route in zip(ids, tasks, routes, strict=True)
                ],
            )
            conn.execute(
                insert(TaskHistory.__table__),
                [{"task_id": tid, "status": "received", "time": t, "detail": ""} for tid in ids],
            )
            outbox = Outbox.__table__
            outbox_ids = list(conn.execute(
                insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True),
                [{"kind": "task", "endpoint_id": r, "task_id": tid}
                 for tid, r in zip(ids, routes, strict=True)],
            ).scalars())
            if multi_user:
                children.request_start(s, routes, ids)
            answer = {"task_group_id": group_id, "task_ids": ids}
            conn.execute(insert(Submission.__table__).values(
                user_id=user.id, key=idempotency_key, response=answer, created=t))
        metrics.SUBMITTED.add("rest", len(ids))
        if log.isEnabledFor(logging.DEBUG):  # one line per task: only when asked for
            for tid in ids:
                log.debug("task received for endpoint %s", endpoint_id,
                          extra={"task_id": tid, "task_group_id": group_id})
        if handoff is not None and not multi_user:  # children start first: the outbox's order
            handoff(Handoff(endpoint_id, outbox_ids, [
                task_from_entry(tid, spec, bodies[spec["function_id"]], group_id,
                                submitter=user.id)
                for tid, spec in zip(ids, tasks, strict=True)
            ]))
        return answer
    except IntegrityError:
        prev = _stored_answer(db, user.id, idempotency_key)
        if prev is not None:
            return prev
        raise


def submitted_details(spec: dict[str, Any]) -> dict[str, Any]:
    """What a task's record shows from its submission: Globus Compute's `user_runtime` (the
    submitter's Python and SDK versions, which a GC user reads when a result will not
    deserialize). Its result's details are added to these, never replace them."""
    runtime = spec.get("user_runtime")
    return {"user_runtime": runtime} if runtime else {}


def _check_formats(tasks: list[dict[str, Any]], formats: dict[str, str]) -> None:
    """422 unless each task's function was registered in the task's format: the endpoint
    deserializes both with one format's strategies (their tags collide)."""
    for spec in tasks:
        fmt = spec.get("format") or FORMAT_FNRELAY
        have = formats[spec["function_id"]]
        if have != fmt:
            raise ApiError(422, f"function {spec['function_id']} was registered in the "
                                f"{have!r} format and cannot run as a {fmt!r} task: register "
                                "it through the same API (SDK) you submit with")


# --- records -------------------------------------------------------------------------------------
def _record(task: Task, history: list[TaskHistory]) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "status": task.status,
        "pending": not _is_terminal(task.status),
        "endpoint_id": task.endpoint_id,
        "function_id": task.function_id,
        "task_group_id": task.task_group_id,
        "created": task.created,
        "completed": task.completed,
        "history": [{"status": h.status, "time": h.time, "detail": h.detail} for h in history],
        "result": task.result,
        "exception": task.exception,
        "details": task.details or {},
        "format": task.format,
    }


def task_records(db: Database, user: CurrentUser, task_ids: list[str]) -> dict[str, dict]:
    """Records of the user's tasks among `task_ids` (others' and unknown ids are left out)."""
    out: dict[str, dict] = {}
    with db.read() as s:
        for chunk in chunks.by_count(list(dict.fromkeys(task_ids)), CHUNK):
            tasks = list(
                s.scalars(select(Task).where(Task.id.in_(chunk), Task.owner == user.id))
            )
            history: dict[str, list[TaskHistory]] = {t.id: [] for t in tasks}
            if tasks:
                rows = s.scalars(
                    select(TaskHistory)
                    .where(TaskHistory.task_id.in_(list(history)))
                    .order_by(TaskHistory.id)
                )
                for h in rows:
                    history[h.task_id].append(h)
            for t in tasks:
                out[t.id] = _record(t, history[t.id])
    return out


def task_record(db: Database, user: CurrentUser, task_id: str) -> dict[str, Any]:
    rec = task_records(db, user, [task_id]).get(task_id)
    if rec is None:
        raise not_found("task", task_id)
    return rec


# --- cancel --------------------------------------------------------------------------------------
def cancel(db: Database, user: CurrentUser, task_id: str) -> dict[str, Any]:
    """Cancel a live task: drop its unpublished message or tell its endpoint; forward it."""
    with db.write() as s:
        task = s.scalar(select(Task).where(Task.id == task_id))
        if task is None or task.owner != user.id:
            raise not_found("task", task_id)
        if _is_terminal(task.status):
            return {"task_id": task_id, "status": task.status}
        t = now()
        task.status, task.completed = TaskState.CANCELLED.value, t
        s.add(TaskHistory(task_id=task_id, status="cancelled", time=t, detail="cancelled by user"))
        # A DML statement's result is a CursorResult (Session.execute is typed for queries).
        dropped = cast(CursorResult, s.execute(
            delete(Outbox).where(Outbox.kind == "task", Outbox.task_id == task_id)
        )).rowcount
        if not dropped:
            s.add(Outbox(kind="cancel", endpoint_id=task.endpoint_id, task_id=task_id))
        s.add(Outbox(kind="result", endpoint_id=task.endpoint_id, task_id=task_id))
    return {"task_id": task_id, "status": TaskState.CANCELLED.value}


# --- from endpoints ------------------------------------------------------------------------------
def _mark_delivered(s: Session, task: Task, t: float) -> None:
    """An endpoint reporting on a task proves it was delivered, even if the publisher's own
    bookkeeping commit has not happened yet: record that step so the history stays whole."""
    if task.status == TaskState.RECEIVED.value:
        task.status = TaskState.WAITING_FOR_ENDPOINT.value
        s.add(TaskHistory(task_id=task.id, status=task.status, time=t, detail="delivered"))


_RESULT_COLUMNS = (Task.id, Task.endpoint_id, Task.status, Task.created, Task.task_group_id,
                   Task.format, Task.details)


def _locked_tasks(ids: Sequence[str], *columns: Any) -> Select:
    """Select tasks (or just `columns` of them) FOR UPDATE, in id order (PostgreSQL; SQLite's
    write transaction already excludes others): two broker replicas consuming duplicates of
    one result then record it once."""
    return (select(*(columns or (Task,))).where(Task.id.in_(ids)).order_by(Task.id)
            .with_for_update())


def steps_before(task_id: str, status: str, started: float | None, t: float
                  ) -> list[dict[str, Any]]:
    """History rows a result implies before itself: delivered (the publisher's bookkeeping may
    not have run yet) and running (endpoints fold a fast task's "running" into its result)."""
    steps = []
    at = t if started is None else started
    if status == TaskState.RECEIVED.value:
        status = TaskState.WAITING_FOR_ENDPOINT.value
        steps.append({"task_id": task_id, "status": status, "time": at, "detail": "delivered"})
    if started is not None and status != TaskState.RUNNING.value and can_transition(
            status, TaskState.RUNNING):
        steps.append({"task_id": task_id, "status": TaskState.RUNNING.value, "time": at,
                      "detail": "reported with the result"})
    return steps


def started_at(created: float, r: ResultMessage, t: float) -> float | None:
    """The worker's start time (endpoint clock) kept between the task's creation and `t`, so
    history times stay in order even when the endpoint's clock is off."""
    started = (r.details or {}).get("started")
    if not isinstance(started, (int, float)) or isinstance(started, bool):
        return None
    return max(created, min(float(started), t))


def last_steps(conn: Connection, task_ids: Sequence[str]) -> dict[str, float]:
    """The time of each task's latest history step: a step the endpoint timed is kept after
    it, so the history stays in order whatever the clocks."""
    rows = conn.execute(select(TaskHistory.task_id, func.max(TaskHistory.time))
                        .where(TaskHistory.task_id.in_(task_ids))
                        .group_by(TaskHistory.task_id))
    return {task_id: latest for task_id, latest in rows}


def completed_at(started: float, r: ResultMessage, t: float) -> float:
    """The time the endpoint says the task ended, kept between its start and `t` (as
    `started_at`); `t` if it does not say."""
    completed = (r.details or {}).get("completed")
    if not isinstance(completed, (int, float)) or isinstance(completed, bool):
        return t
    return max(started, min(float(completed), t))


def record_results(
    db: Database, endpoint_id: str, results: list[ResultMessage],
    unknown: list[str] | None = None,
) -> list[ResultMessage]:
    """Record the first terminal result of each task routed to `endpoint_id`.

    Returns the recorded results (with the task group id from the database) to forward;
    duplicates, late results and results from another endpoint are ignored. Ids of tasks the
    database does not know (yet: a direct-path task's record may come second) are appended
    to `unknown`. SQL Core throughout: this is the broker's hottest write.
    """
    recorded: list[ResultMessage] = []
    timings: list[metrics.Timing] = []
    table = Task.__table__
    with db.write() as s:
        conn = s.connection()
        ids = sorted({r.task_id for r in results})  # sorted: row locks in one order
        rows, last = {}, {}
        for chunk in chunks.by_count(ids, CHUNK):
            rows.update({row.id: row for row in conn.execute(
                _locked_tasks(chunk, *_RESULT_COLUMNS))})
            last.update(last_steps(conn, chunk))
        t = now()  # after the row locks: later than any step recorded before them
        status = {i: row.status for i, row in rows.items()}
        history: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for r in results:
            row = rows.get(r.task_id)
            if row is None and unknown is not None:
                unknown.append(r.task_id)
                continue
            if row is None or row.endpoint_id != endpoint_id:
                log.warning("ignoring result for task %s from endpoint %s", r.task_id, endpoint_id)
                continue
            if _is_terminal(status[row.id]) or r.status not in TERMINAL_VALUES:
                continue
            started = started_at(row.created, r, t)
            done = completed_at(max(last.get(row.id, row.created), started or row.created),
                                r, t)
            history += steps_before(row.id, status[row.id], started, done)
            history.append({"task_id": row.id, "status": r.status, "time": done, "detail": ""})
            timings.append(metrics.Timing(r.status, row.created, started, done))
            status[row.id] = r.status
            exc = asdict(r.exception) if isinstance(r.exception, ExceptionInfo) else r.exception
            changes.append({"b_id": row.id, "status": r.status, "completed": done,
                            "result": r.result, "exception": exc,
                            "details": {**(row.details or {}), **(r.details or {})}})
            recorded.append(ResultMessage(
                task_id=row.id, status=r.status, result=r.result, exception=r.exception,
                details=r.details or {}, task_group_id=row.task_group_id, format=row.format))
        if changes:
            conn.execute(
                update(table).where(table.c.id == bindparam("b_id")).values(
                    status=bindparam("status"), completed=bindparam("completed"),
                    result=bindparam("result"), exception=bindparam("exception"),
                    details=bindparam("details")),
                changes)
            conn.execute(insert(TaskHistory.__table__), history)
    metrics.observe(timings)
    if log.isEnabledFor(logging.DEBUG):
        for r in recorded:
            log.debug("task %s: result recorded", r.status,
                      extra={"task_id": r.task_id, "endpoint_id": endpoint_id})
    return recorded


def apply_status(db: Database, endpoint_id: str, updates: list[StatusUpdate],
                 unknown: list[str] | None = None) -> int:
    """Apply allowed non-terminal transitions reported by the endpoint; returns how many. Ids
    of tasks the database does not know (yet: a direct-path task's record may come after
    the endpoint's first status) are appended to `unknown`. A step is recorded at the time
    the endpoint saw it (`StatusUpdate.time`), kept between the task's last step and now."""
    applied = 0
    with db.write() as s:
        ids = sorted({u.task_id for u in updates})  # sorted: row locks in one order
        tasks: dict[str, Task] = {}
        last: dict[str, float] = {}
        for chunk in chunks.by_count(ids, CHUNK):
            tasks.update({x.id: x for x in s.scalars(_locked_tasks(chunk))})
            last.update(last_steps(s.connection(), chunk))
        for u in updates:
            task = tasks.get(u.task_id)
            if task is None and unknown is not None:
                unknown.append(u.task_id)
                continue
            if task is None or task.endpoint_id != endpoint_id or _is_terminal(u.status):
                continue
            t = now()
            if not _is_terminal(task.status) and task.status == TaskState.RECEIVED.value:
                _mark_delivered(s, task, t)
                last[task.id] = t
            if task.status == u.status or not can_transition(task.status, u.status):
                continue
            task.status = u.status
            at = max(last.get(task.id, task.created), min(u.time, t))
            last[task.id] = at
            s.add(TaskHistory(task_id=task.id, status=u.status, time=at, detail=u.detail))
            applied += 1
    return applied


#: The most of a heartbeat's `info` kept as the endpoint's details (JSON text): an
#: endpoint's figures fit in a few hundred bytes; more is not stored, never an error.
MAX_DETAILS = 16_384


def heartbeat_details(info: dict[str, Any]) -> dict[str, Any] | None:
    """The part of a heartbeat's info kept for its owner's status: all of it within
    MAX_DETAILS, else only its state."""
    text = json.dumps(info, separators=(",", ":"), default=str)
    return info if len(text) <= MAX_DETAILS else {"state": info.get("state")}


def record_heartbeat(db: Database, endpoint_id: str, hb: Heartbeat) -> bool:
    """Note a heartbeat (at the broker's clock: endpoints' clocks may drift)."""
    info = hb.info or {}
    state = str(info.get("state") or "online")
    with db.write() as s:
        ep = s.get(Endpoint, endpoint_id)
        if ep is None:
            return False
        ep.last_heartbeat, ep.state = now(), state
        ep.details = heartbeat_details(info)
    return True


# --- outbox --------------------------------------------------------------------------------------
def _outbox_rows(limit: int, only: list[int] | None = None) -> Select:
    q = select(Outbox.id, Outbox.kind, Outbox.endpoint_id, Outbox.task_id)
    if only is not None:
        q = q.where(Outbox.id.in_(only))
    return q.order_by(Outbox.id).limit(limit)


def read_outbox(db: Database, limit: int, only: list[int] | None = None
                ) -> list[tuple[int, str, str, str]]:
    """The oldest unpublished rows (among `only`, if given): (id, kind, endpoint_id, task_id)."""
    with db.read() as s:
        rows = s.execute(_outbox_rows(limit, only)).all()
    return [tuple(r) for r in rows]


def task_messages(db: Database, task_ids: list[str]) -> list[TaskMessage]:
    """TaskMessages (with function bodies) in the order of `task_ids`."""
    found: dict[str, TaskMessage] = {}
    with db.read() as s:
        for chunk in chunks.by_count(task_ids, CHUNK):
            rows = s.execute(
                select(Task, Function.body)
                .join(Function, Function.id == Task.function_id)
                .where(Task.id.in_(chunk))
            ).all()
            for task, body in rows:
                found[task.id] = TaskMessage(
                    task_id=task.id, function_id=task.function_id, function=body,
                    payload=task.payload, task_group_id=task.task_group_id,
                    resource_specification=task.resource_specification or {},
                    user_endpoint_config=task.user_endpoint_config or {},
                    max_retries=task.max_retries, format=task.format,
                    result_serializers=list(task.result_serializers or []),
                    python_version=task.python_version,
                    submitter=task.owner,
                )
    return [found[i] for i in task_ids if i in found]


def result_messages(db: Database, task_ids: list[str]) -> list[ResultMessage]:
    """ResultMessages of terminal tasks, for forwarding to their task groups."""
    out = []
    with db.read() as s:
        for chunk in chunks.by_count(task_ids, CHUNK):
            for task in s.scalars(select(Task).where(Task.id.in_(chunk))):
                if not _is_terminal(task.status):
                    continue
                exc = ExceptionInfo(**task.exception) if task.exception else None
                out.append(
                    ResultMessage(
                        task_id=task.id, status=task.status, result=task.result, exception=exc,
                        details=task.details or {}, task_group_id=task.task_group_id,
                        format=task.format,
                    )
                )
    return out


@dataclass
class _Claim:
    """Outbox rows one publisher holds (PostgreSQL), and what it finished publishing."""

    session: Session
    outbox_ids: list[int] = field(default_factory=list)
    sent: list[tuple[str, float]] = field(default_factory=list)


_claim: ContextVar[_Claim | None] = ContextVar("fnrelay_outbox_claim", default=None)


@contextmanager
def claim_outbox(db: Database, limit: int, only: list[int] | None = None
                 ) -> Iterator[list[tuple[int, str, str, str]]]:
    """The oldest unpublished rows (among `only`, if given), for this publisher alone until
    the block ends.

    SQLite has one broker: a plain read (`read_outbox`). PostgreSQL may have replicas: the rows
    are locked FOR UPDATE SKIP LOCKED in a transaction held while they are published, so
    another replica's publisher skips them. `finish_outbox` calls inside the block only note
    what was confirmed; at the end the confirmed rows are deleted in the locking transaction
    (committed even if a later publish failed), and then their tasks move on in a second
    transaction: the claim never waits for a task row lock (a concurrent cancel holds one
    while it waits for the outbox row).
    """
    if db.is_sqlite:
        yield read_outbox(db, limit, only)
        return
    with db.write() as s:
        rows = s.execute(
            _outbox_rows(limit, only).with_for_update(skip_locked=True)
        ).all()
        claim = _Claim(s)
        token = _claim.set(claim)
        failure: BaseException | None = None
        try:
            yield [tuple(r) for r in rows]
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the commit
            failure = e
        finally:
            _claim.reset(token)
        for chunk in chunks.by_count(claim.outbox_ids, CHUNK):
            s.execute(delete(Outbox).where(Outbox.id.in_(chunk)))
    if claim.sent:
        with db.write() as s:
            _advance_sent(s, claim.sent)
    if failure is not None:
        raise failure


def finish_outbox(
    db: Database, outbox_ids: list[int], sent_task_ids: list[str], published: float = 0.0
) -> None:
    """After a confirmed publish: drop the rows and move sent tasks to waiting-for-endpoint
    (inside `claim_outbox` on PostgreSQL: when the claim ends).

    `published` is when the message was handed to RabbitMQ, taken before the publish: the
    history's waiting-for-endpoint step then never comes after the worker's start, which
    can happen before the confirm returns.

    A task cancelled while its message was in flight gets a 'cancel' row instead, so the
    endpoint learns about it.
    """
    sent = [(i, published or now()) for i in sent_task_ids]
    claim = _claim.get()
    if claim is not None:
        claim.outbox_ids += outbox_ids
        claim.sent += sent
        return
    with db.write() as s:
        for chunk in chunks.by_count(outbox_ids, CHUNK):
            s.connection().execute(delete(Outbox.__table__).where(Outbox.id.in_(chunk)))
        _advance_sent(s, sent)


def _advance_sent(s: Session, sent: list[tuple[str, float]]) -> None:
    """Sent tasks still `received` move to waiting-for-endpoint (at their publish time);
    cancelled ones get a cancel. SQL Core, one UPDATE ... RETURNING for the usual case."""
    published = dict(sent)
    conn = s.connection()
    tasks_t = Task.__table__
    moved: list[str] = []
    # Row locks in one order; a racing cancel wins.
    for chunk in chunks.by_count(sorted(published), CHUNK):
        moved += conn.execute(
            update(tasks_t)
            .where(tasks_t.c.id.in_(chunk), tasks_t.c.status == TaskState.RECEIVED.value)
            .values(status=TaskState.WAITING_FOR_ENDPOINT.value)
            .returning(tasks_t.c.id)
        ).scalars().all()
    if moved:
        conn.execute(insert(TaskHistory.__table__), [
            {"task_id": i, "status": "waiting-for-endpoint", "time": published[i], "detail": ""}
            for i in moved
        ])
    rest = sorted(set(published) - set(moved))
    cancelled: list[tuple[str, str]] = []
    for chunk in chunks.by_count(rest, CHUNK):
        cancelled += [tuple(r) for r in conn.execute(
            select(tasks_t.c.id, tasks_t.c.endpoint_id)
            .where(tasks_t.c.id.in_(chunk), tasks_t.c.status == TaskState.CANCELLED.value))]
    if cancelled:
        conn.execute(
            insert(Outbox.__table__),
            [{"kind": "cancel", "endpoint_id": e, "task_id": i} for i, e in cancelled],
        )
