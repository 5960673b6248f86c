"""Reclaim the RabbitMQ accounts nobody uses any more, so they do not pile up.

The broker makes an account per task group reader (`POST /v1/task_groups`) and per child
endpoint start (a manager's credentials request). Both are made on demand and get a new
password at every hand-out, so deleting an unused one loses nothing: the next hand-out makes
it again (an Executor re-attaching to its group, a manager starting the child again). Unused
means, for `account_idle` seconds:

- a task group: not handed out (an Executor attaching), no unfinished task, no task created
  or finished, no result waiting in the outbox, and nobody consuming its queue (RabbitMQ's
  count lags: a fresh consumer alone does not keep the account). Its result queue goes with
  the account.
- a child endpoint: not handed out (a manager starting it), no unfinished task, no task
  created or finished, no heartbeat, and nobody consuming its task queue (the queue stays:
  tasks may still be routed to the child).
- any `fnrelay-ep-`/`fnrelay-group-` account whose endpoint or group record is gone.

The list of accounts comes from RabbitMQ (the accounts with permissions in the broker's
virtual host), so accounts left over by a crash or by an older broker are found too.
Endpoints and managers keep their accounts until they are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from fnrelay import chunks, wire
from fnrelay_broker.accounts import ENDPOINT_PREFIX, GROUP_PREFIX, AccountError, Accounts
from fnrelay_broker.children import parent_of
from fnrelay_broker.db import Database
from fnrelay_broker.models import Endpoint, Outbox, Task, TaskGroup
from fnrelay_broker.settings import DEFAULT_ACCOUNT_IDLE

log = logging.getLogger(__name__)

_CHUNK = 500


def _with_recent_tasks(s: Session, column: InstrumentedAttribute[str | None], ids: Sequence[str],
                       cutoff: float) -> set[str]:
    """Those of `ids` (values of Task.`column`) with a task unfinished or active since cutoff."""
    return set(s.scalars(select(column).where(
        column.in_(ids),
        or_(Task.status.not_in(wire.TERMINAL_VALUES), Task.created >= cutoff,
            Task.completed >= cutoff),
    ).distinct()))


def idle_groups(db: Database, group_ids: list[str], cutoff: float) -> list[str]:
    """The task groups among `group_ids` with nothing to do since `cutoff` (or no record)."""
    idle = []
    with db.read() as s:
        for ids in chunks.by_count(group_ids, _CHUNK):
            busy = _with_recent_tasks(s, Task.task_group_id, ids, cutoff)
            busy |= set(s.scalars(
                select(Task.task_group_id).join(Outbox, Outbox.task_id == Task.id)
                .where(Task.task_group_id.in_(ids), Outbox.kind == "result").distinct()))
            busy |= set(s.scalars(select(TaskGroup.id).where(
                TaskGroup.id.in_(ids),
                or_(TaskGroup.created >= cutoff, TaskGroup.handed_out >= cutoff))))
            idle += [g for g in ids if g not in busy]
    return idle


def idle_children(db: Database, endpoint_ids: list[str], cutoff: float) -> list[str]:
    """The child endpoints among `endpoint_ids` quiet since `cutoff`, and ids with no record;
    other endpoints (single-user ones, managers) are never idle here."""
    idle = []
    with db.read() as s:
        for ids in chunks.by_count(endpoint_ids, _CHUNK):
            records = {ep.id: ep for ep in s.scalars(select(Endpoint).where(Endpoint.id.in_(ids)))}
            busy = _with_recent_tasks(s, Task.endpoint_id, ids, cutoff)
            for eid in ids:
                ep = records.get(eid)
                if ep is not None and (
                    parent_of(ep) is None or eid in busy or ep.created >= cutoff
                    or (ep.last_heartbeat or 0.0) >= cutoff or (ep.handed_out or 0.0) >= cutoff
                ):
                    continue
                idle.append(eid)
    return idle


class Reclaimer:
    """Deletes the unused accounts (and group queues); run by the cleaner thread."""

    def __init__(self, db: Database, accounts: Accounts, idle: float = DEFAULT_ACCOUNT_IDLE):
        self.db, self.accounts, self.idle = db, accounts, idle

    def run(self, now: float | None = None) -> int:
        """One pass; the number of accounts deleted."""
        cutoff = (wire.now() if now is None else now) - self.idle
        names = self.accounts.usernames()
        groups = [n[len(GROUP_PREFIX):] for n in names if n.startswith(GROUP_PREFIX)]
        endpoints = [n[len(ENDPOINT_PREFIX):] for n in names if n.startswith(ENDPOINT_PREFIX)]
        deleted = 0
        for gid in idle_groups(self.db, groups, cutoff):
            deleted += self._reclaim(GROUP_PREFIX + gid, self.accounts.names.group(gid), True)
        for eid in idle_children(self.db, endpoints, cutoff):
            deleted += self._reclaim(ENDPOINT_PREFIX + eid, self.accounts.names.endpoint(eid),
                                    False)
        return deleted

    def _reclaim(self, username: str, queue: str, delete_queue: bool) -> bool:
        """Delete `username` unless `queue` has a consumer (someone still uses the account)."""
        try:
            if self.accounts.consumers(queue):
                return False
            self.accounts.delete(username)
            if delete_queue:
                self.accounts.delete_queue(queue)
        except AccountError as e:
            log.warning("cannot reclaim RabbitMQ account %s: %s", username, e)
            return False
        log.info("deleted RabbitMQ account %s: unused for %gs", username, self.idle)
        return True
