"""Multi-user endpoints at the broker: routing tasks to per-(user, config) child endpoints.

A manager registers with metadata ``{"multi_user": true}``. Any user may submit to it: each
task goes to the user's child for that config, a record the broker creates (with a random id)
and gives to the submitting user (so only they see its tasks), and a ``start-child`` control
message for the manager is committed in the same transaction (an outbox row). The manager
answers ``child-failed`` when it cannot run a child; the child's unfinished tasks then fail with
the manager's reason.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from fnrelay.wire import (
    TERMINAL_VALUES,
    ExceptionInfo,
    StartChild,
    TaskState,
    canonical_config,
    now,
    runtime,
)
from fnrelay_broker import endpoint_cap
from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.db import Database
from fnrelay_broker.errors import not_found
from fnrelay_broker.gc_endpoints import KEY as GC_KEY
from fnrelay_broker.models import Endpoint, Outbox, Task, TaskHistory, User

log = logging.getLogger(__name__)

#: Outbox kind: publish a StartChild for the child (endpoint_id) to its manager's control queue.
OUTBOX_START_CHILD = "start-child"
#: Exception type of tasks failed because their child could not run.
CHILD_FAILED_TYPE = "fnrelay.errors.ChildEndpointError"


def is_multi_user(ep: Endpoint) -> bool:
    return bool((ep.metadata_ or {}).get("multi_user"))


def plain(metadata: dict[str, Any] | None) -> bool:
    """Is an endpoint with this metadata neither a multi-user manager nor one's child?"""
    return not (metadata or {}).get("multi_user") and (metadata or {}).get("parent") is None


def parent_of(ep: Endpoint | None) -> str | None:
    """The manager id of a child endpoint record, else None."""
    return (ep.metadata_ or {}).get("parent") if ep is not None else None


def _ensure_child(s: Session, manager: Endpoint, user: CurrentUser, config: dict[str, Any],
                  t: float, max_endpoints: int) -> str:
    """The user's child of `manager` for `config`, created with a random id when missing
    (and the user's endpoints, children included, are fewer than `max_endpoints`: else 403).

    Found by owner, parent and config, never by an id derived from them: a derived id is one
    another user can compute, and a record of theirs under it would receive this user's
    tasks.
    """
    key = canonical_config(config)
    for ep in s.scalars(select(Endpoint).where(
            Endpoint.owner == user.id,
            Endpoint.metadata_["parent"].as_string() == manager.id)):
        if canonical_config((ep.metadata_ or {}).get("user_endpoint_config")) == key:
            return str(ep.id)
    endpoint_cap.check(s, user.id, max_endpoints)
    child_id = str(uuid.uuid4())
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    s.add(Endpoint(
        id=child_id, owner=user.id, name=f"{manager.name}/{user.username}/{digest}",
        metadata_={"parent": manager.id, "user_endpoint_config": config,
                   **{k: v for k, v in (manager.metadata_ or {}).items() if k == GC_KEY}},
        state="registered", created=t,
    ))
    s.flush()
    return child_id


def route(s: Session, manager: Endpoint, user: CurrentUser, tasks: list[dict[str, Any]],
          t: float, max_endpoints: int = 0) -> list[str]:
    """The child endpoint id of each task (records created as needed, within the user's
    `max_endpoints`), in task order."""
    cache: dict[str, str] = {}
    routes = []
    for spec in tasks:
        config = spec.get("user_endpoint_config") or {}
        key = canonical_config(config)
        if key not in cache:
            cache[key] = _ensure_child(s, manager, user, config, t, max_endpoints)
        routes.append(cache[key])
    return routes


def request_start(s: Session, routes: list[str], task_ids: list[str]) -> None:
    """One start-child outbox row per child of this submission, after its task rows.

    Sent on every submission, not only when the child looks offline: a child that is stopping
    for idleness may still look online, and the manager counts these as the child's activity.
    """
    first: dict[str, str] = {}
    for child, tid in zip(routes, task_ids, strict=True):
        first.setdefault(child, tid)
    s.execute(insert(Outbox), [{"kind": OUTBOX_START_CHILD, "endpoint_id": c, "task_id": tid}
                               for c, tid in first.items()])


def start_messages(db: Database, starts: list[tuple[str, str | None]]
                   ) -> list[tuple[str, StartChild]]:
    """(manager id, StartChild) for each known child among `starts` ((child id, id of the
    task that asked for the start)), carrying that task's `user_runtime`."""
    asked = dict(starts)
    out = []
    with db.read() as s:
        rows = s.execute(
            select(Endpoint, User.username).join(User, User.id == Endpoint.owner)
            .where(Endpoint.id.in_(list(asked)))
        ).all()
        tids = [t for t in asked.values() if t]
        # Keyed by (child, task): a task's runtime goes to the child it was routed to only.
        tasks = {(child, tid): (details, pyver) for tid, child, details, pyver in s.execute(
            select(Task.id, Task.endpoint_id, Task.details, Task.python_version)
            .where(Task.id.in_(tids)))}
        for ep, username in rows:
            manager = parent_of(ep)
            if manager:
                details, pyver = tasks.get((ep.id, asked[ep.id] or ""), (None, None))
                out.append((manager, StartChild(
                    child_id=ep.id, user_id=ep.owner, username=username,
                    user_endpoint_config=(ep.metadata_ or {}).get("user_endpoint_config") or {},
                    user_runtime=runtime.for_task((details or {}).get("user_runtime"), pyver),
                )))
    return out


def hand_out(db: Database, user: CurrentUser, manager_id: str, child_id: str) -> None:
    """Mark the child's account handed out now (so it is not reclaimed before the child
    connects); 404 unless `user` owns the manager and `child_id` is one of its children."""
    with db.write() as s:
        manager = s.get(Endpoint, manager_id)
        if manager is None or manager.owner != user.id or not is_multi_user(manager):
            raise not_found("endpoint", manager_id)
        child = s.get(Endpoint, child_id)
        if child is None or parent_of(child) != manager_id:
            raise not_found("child endpoint", child_id)
        child.handed_out = now()


def mark_handed_out(db: Database, child_id: str) -> None:
    """The child's account was handed out now (in a start command): not reclaimed before
    the child connects."""
    with db.write() as s:
        child = s.get(Endpoint, child_id)
        if child is not None:
            child.handed_out = now()


def fail_own_tasks(db: Database, child_id: str, error: str) -> int:
    """Fail the unfinished tasks of a child that reports it cannot start (an official
    endpoint's failure notice comes from the child's account); 0 for anything but a child."""
    with db.read() as s:
        manager = parent_of(s.get(Endpoint, child_id))
    return 0 if manager is None else fail_child_tasks(db, manager, child_id, error)


def fail_child_tasks(db: Database, manager_id: str, child_id: str, error: str) -> int:
    """Fail the unfinished tasks of `child_id` (only if `manager_id` is its parent).

    Returns how many; their results go to their task groups through the outbox.
    """
    t = now()
    with db.write() as s:
        child = s.get(Endpoint, child_id)
        if parent_of(child) != manager_id:
            log.warning("ignoring child-failed for %s from %s: not its manager", child_id,
                        manager_id)
            return 0
        ids = list(s.scalars(select(Task.id).where(Task.endpoint_id == child_id,
                                                   Task.status.not_in(TERMINAL_VALUES))))
        if not ids:
            return 0
        exc = ExceptionInfo(type=CHILD_FAILED_TYPE, message=error, traceback="").__dict__
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            s.execute(delete(Outbox).where(Outbox.kind == "task", Outbox.task_id.in_(chunk)))
            s.execute(update(Task).where(Task.id.in_(chunk))
                      .values(status=TaskState.FAILED.value, exception=exc, completed=t))
        s.execute(insert(TaskHistory), [{"task_id": i, "status": "failed", "time": t,
                                         "detail": f"child endpoint: {error}"[:2000]}
                                        for i in ids])
        s.execute(insert(Outbox), [{"kind": "result", "endpoint_id": child_id, "task_id": i}
                                   for i in ids])
    return len(ids)
