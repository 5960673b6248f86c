"""What the dashboard reads beyond the API's own read paths (registry, task_list, tasks):
task groups with their counts, finished tasks for the chart, and the operators' overview.

Every query for a user is scoped by owner, like the API's; only `overview` reads every
tenant's rows, and the views call it for operators alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.db import Database
from fnrelay_broker.models import Endpoint, Task, TaskGroup, User
from fnrelay_broker.registry import endpoint_status

#: Task groups shown, newest first.
GROUPS_SHOWN = 50
#: Finished tasks read for the chart at most: the newest ones if there are more.
CHART_ROWS = 50_000


def task_groups(db: Database, user: CurrentUser) -> list[dict[str, Any]]:
    """The user's newest task groups, each with its tasks counted by state."""
    with db.read() as s:
        groups = list(s.scalars(select(TaskGroup).where(TaskGroup.owner == user.id)
                                .order_by(TaskGroup.created.desc()).limit(GROUPS_SHOWN)))
        counts: dict[str, dict[str, int]] = {g.id: {} for g in groups}
        if groups:
            rows = s.execute(
                select(Task.task_group_id, Task.status, func.count())
                .where(Task.owner == user.id, Task.task_group_id.in_(list(counts)))
                .group_by(Task.task_group_id, Task.status))
            for gid, status, n in rows:
                counts[gid][status] = n
    return [{"task_group_id": g.id, "created": g.created, "counts": counts[g.id],
             "total": sum(counts[g.id].values())} for g in groups]


def finished(db: Database, user: CurrentUser, since: float) -> list[tuple[float, float]]:
    """(created, completed) of the user's tasks completed since `since`."""
    with db.read() as s:
        rows = s.execute(
            select(Task.created, Task.completed)
            .where(Task.owner == user.id, Task.completed.is_not(None),
                   Task.completed >= since)
            .order_by(Task.completed.desc()).limit(CHART_ROWS))
        return [(c, d) for c, d in rows if d is not None]


@dataclass
class Tenant:
    """One user's figures in the operators' overview."""

    username: str
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, int] = field(default_factory=dict)


def overview(db: Database, threshold: float) -> list[Tenant]:
    """Every user with their endpoints and task counts by state (operators only)."""
    with db.read() as s:
        users = {u.id: Tenant(u.username) for u in s.scalars(
            select(User).order_by(User.username))}
        for ep in s.scalars(select(Endpoint).order_by(Endpoint.name)):
            if ep.owner in users:
                users[ep.owner].endpoints.append({
                    "endpoint_id": ep.id, "name": ep.name,
                    "status": endpoint_status(ep, threshold),
                    "last_heartbeat": ep.last_heartbeat, "details": dict(ep.details or {})})
        for owner, status, n in s.execute(
                select(Task.owner, Task.status, func.count()).group_by(Task.owner, Task.status)):
            if owner in users:
                users[owner].tasks[status] = n
    return list(users.values())
