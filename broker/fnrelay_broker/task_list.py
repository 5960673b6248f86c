"""Listing a user's own tasks, newest first, filtered and paginated (GET /v1/tasks).

Only the owner's tasks are ever read: the owner condition is part of every query, so a filter
naming someone else's endpoint or function simply matches nothing. Pages are cut by the
task's `seq` (submission order), not by an offset: tasks submitted while a user pages through
the list neither repeat nor shift a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from fnrelay.wire import TERMINAL_VALUES, TaskState
from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError
from fnrelay_broker.models import Task

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
STATES = tuple(s.value for s in TaskState)
#: A cursor is a seq: more digits than a 64-bit integer has would overflow the database's.
_CURSOR_DIGITS = 18


@dataclass
class TaskFilter:
    """What the caller asked for; every field None means "any"."""

    states: list[str] | None = None
    endpoint_id: str | None = None
    function_id: str | None = None
    since: float | None = None  # created at or after (epoch seconds)
    until: float | None = None  # created before
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # the `next` cursor of the previous page


def _cursor(after: str | None) -> int | None:
    if after is None:
        return None
    if not (after.isascii() and after.isdigit() and len(after) <= _CURSOR_DIGITS):
        raise ApiError(422, f"'after' must be the 'next' value of a previous page, not {after!r}")
    return int(after)


def _states(states: list[str] | None) -> list[str] | None:
    """Each state named, comma-separated or repeated; 422 for one the broker has not."""
    if not states:
        return None
    wanted = [s.strip() for raw in states for s in raw.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STATES]
    if unknown:
        raise ApiError(422, f"unknown task state {unknown[0]!r} (known: {', '.join(STATES)})")
    return wanted


def _summary(task: Task) -> dict[str, Any]:
    """A listed task: what a table shows, without payload, result or history."""
    return {
        "task_id": task.id, "status": task.status,
        "pending": task.status not in TERMINAL_VALUES,
        "endpoint_id": task.endpoint_id, "function_id": task.function_id,
        "task_group_id": task.task_group_id, "created": task.created,
        "completed": task.completed,
    }


def list_tasks(db: Database, user: CurrentUser, f: TaskFilter) -> dict[str, Any]:
    """``{"tasks": [...], "next": cursor | None}``: up to `f.limit` of the user's tasks,
    newest first; `next` fetches the following page (None on the last one)."""
    if not 1 <= f.limit <= MAX_LIMIT:
        raise ApiError(422, f"'limit' must be between 1 and {MAX_LIMIT}, not {f.limit}")
    q = select(Task).where(Task.owner == user.id)
    states = _states(f.states)
    if states:
        q = q.where(Task.status.in_(states))
    if f.endpoint_id:
        q = q.where(Task.endpoint_id == f.endpoint_id)
    if f.function_id:
        q = q.where(Task.function_id == f.function_id)
    if f.since is not None:
        q = q.where(Task.created >= f.since)
    if f.until is not None:
        q = q.where(Task.created < f.until)
    cursor = _cursor(f.after)
    if cursor is not None:
        q = q.where(Task.seq < cursor)
    with db.read() as s:
        rows = list(s.scalars(q.order_by(Task.seq.desc()).limit(f.limit + 1)))
    page = rows[:f.limit]
    more = len(rows) > f.limit
    return {"tasks": [_summary(t) for t in page],
            "next": str(page[-1].seq) if more else None}
