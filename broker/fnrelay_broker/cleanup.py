"""Task and result time-to-live: a thread that deletes finished tasks after `result_ttl`.

Only terminal tasks go (their history, result blobs and any outbox rows with them), in small
batches so a large backlog never holds the database's write lock for long. A task still
waiting or running stays, however old: its outcome is not recorded yet. The same thread
reclaims unused RabbitMQ accounts (reclaim.py), on its own schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import delete, select

from fnrelay import wire
from fnrelay_broker import blobs
from fnrelay_broker.blobs import BlobStore
from fnrelay_broker.db import Database
from fnrelay_broker.models import Outbox, Submission, Task, TaskHistory
from fnrelay_broker.reclaim import Reclaimer

log = logging.getLogger(__name__)

BATCH = 500


def interval(ttl: float) -> float:
    """How often the cleaner runs: a tenth of the ttl, at most hourly."""
    return max(0.1, min(ttl / 10, 3600.0))


def delete_expired(db: Database, ttl: float, now: float | None = None,
                   batch: int = BATCH, blob_store: BlobStore | None = None) -> int:
    """Delete terminal tasks completed more than `ttl` seconds ago, and their result blobs
    (files in `blob_store`'s directory once the rows are gone); the number deleted."""
    cutoff = (wire.now() if now is None else now) - ttl
    total = 0
    while True:
        files: list[str] = []
        with db.write() as s:
            ids = list(s.scalars(
                select(Task.id)
                .where(Task.status.in_(wire.TERMINAL_VALUES), Task.completed < cutoff)
                .limit(batch)
            ))
            if ids:
                files = blobs.delete_rows(s, ids)
                s.execute(delete(TaskHistory).where(TaskHistory.task_id.in_(ids)))
                s.execute(delete(Outbox).where(Outbox.task_id.in_(ids)))
                s.execute(delete(Task).where(Task.id.in_(ids)))
            else:  # idempotency records of submits older than the ttl go too
                s.execute(delete(Submission).where(Submission.created < cutoff))
        if files and blob_store is not None:
            blob_store.remove_files(files)
        total += len(ids)
        if len(ids) < batch:
            return total


class Cleaner(threading.Thread):
    """Runs delete_expired every interval(ttl) and, given a reclaimer, reclaims unused
    RabbitMQ accounts every interval(reclaimer.idle), until stopped."""

    def __init__(self, db: Database, ttl: float, blob_store: BlobStore | None = None,
                 reclaimer: Reclaimer | None = None):
        super().__init__(name="fnrelay-cleaner", daemon=True)
        self.db, self.ttl, self.blob_store = db, ttl, blob_store
        self.stopping = threading.Event()
        self.jobs: list[tuple[float, Callable[[], None]]] = [(interval(ttl), self._expire)]
        if reclaimer is not None:
            self.jobs.append((interval(reclaimer.idle), lambda: self._reclaim(reclaimer)))

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)

    def run(self) -> None:
        due = [time.monotonic() + period for period, _ in self.jobs]
        while not self.stopping.wait(max(0.0, min(due) - time.monotonic())):
            for i, (period, job) in enumerate(self.jobs):
                if time.monotonic() >= due[i]:
                    job()
                    due[i] = time.monotonic() + period

    def _expire(self) -> None:
        try:
            n = delete_expired(self.db, self.ttl, blob_store=self.blob_store)
        except Exception as e:  # noqa: BLE001 - database briefly unavailable: next round
            log.warning("task cleanup failed: %s", e)
            return
        if n:
            log.info("deleted %d task(s) finished more than %gs ago", n, self.ttl)

    @staticmethod
    def _reclaim(reclaimer: Reclaimer) -> None:
        try:
            reclaimer.run()
        except Exception as e:  # noqa: BLE001 - RabbitMQ or the database away: next round
            log.warning("reclaiming unused RabbitMQ accounts failed: %s", e)
