"""The endpoint's durable hand-off: received tasks and the result spool, in SQLite (WAL).

A task is journaled before its message is acked, and its result stays here until the broker
confirmed the publish, so a crash at any point loses nothing: at the next start
`unfinished()` are run again and `unpublished()` are sent again. The broker records the first
result per task and ignores duplicates, so re-sending is always safe.

Row states: queued -> running -> done (result stored; `published` once confirmed).
`cancelled` is a tombstone for a cancel that arrived before its task: the task never runs.
Used by one thread (the agent's I/O thread) at a time; only `sync()` may be called from
another (it touches the files, not the connection).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fnrelay import wire
from fnrelay.wire import ResultMessage, TaskMessage, now
from fnrelay_endpoint.worker import cancelled_result

QUEUED, RUNNING, DONE, TOMBSTONE = "queued", "running", "done", "cancelled"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id   TEXT PRIMARY KEY,
    state     TEXT NOT NULL,
    task      TEXT,              -- TaskMessage JSON (NULL for a tombstone)
    result    TEXT,              -- ResultMessage JSON once done
    published INTEGER NOT NULL DEFAULT 0,
    seq       INTEGER,           -- arrival order, so recovery re-runs tasks FIFO
    updated   REAL NOT NULL,
    failures  INTEGER NOT NULL DEFAULT 0  -- runs lost to infrastructure (worker, endpoint)
);
CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks (state, seq);
CREATE INDEX IF NOT EXISTS tasks_unpublished ON tasks (published, state);
"""


#: Seconds between deferred checkpoints (defer_checkpoints).
CHECKPOINT_EVERY = 1.0


class Journal:
    """SQLite journal of one endpoint."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        (mode,) = self.db.execute("PRAGMA journal_mode=WAL").fetchone()
        #: In WAL mode a commit can be made durable later, from another thread (`sync`).
        self.wal = str(mode).lower() == "wal"
        self._sync_lock = threading.Lock()
        # Commits are synced to disk only where fnrelay acks a message after them (tasks and
        # cancels: see _tx). A result or "published" mark lost to a power cut costs a re-run or
        # a duplicate publish, which the broker ignores; an fsync per result costs latency.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(tasks)")}
        if "failures" not in columns:  # a journal written before retries existed
            self.db.execute("ALTER TABLE tasks ADD COLUMN failures INTEGER NOT NULL DEFAULT 0")
        # Arrival order of the newest task: read once (MAX over the whole table costs ~4 ms at
        # 100,000 journaled tasks), then counted here; only this object writes tasks.
        (self._seq,) = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()
        self._deferred = False  # checkpoints left to `sync` (defer_checkpoints)
        self._next_checkpoint = 0.0
        self._checkpointer: sqlite3.Connection | None = None

    def close(self) -> None:
        self.db.close()
        if self._checkpointer is not None:
            self._checkpointer.close()

    def defer_checkpoints(self) -> None:
        """Stop SQLite's automatic checkpoints (WAL mode): `sync` then copies the -wal into
        the database file, at most every CHECKPOINT_EVERY. Else the commit that fills the
        -wal to 1,000 pages copies ~4 MB and fsyncs on the agent's I/O thread, holding up the
        next task by several milliseconds."""
        if self.wal:
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self._deferred = True

    def _tx(self, durable: bool = False) -> sqlite3.Connection:
        """Begin a write transaction; a durable one is fsynced at COMMIT (power-loss safe)."""
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    # --- tasks --------------------------------------------------------------------------------
    def add_tasks(self, tasks: list[TaskMessage],
                  before_commit: Callable[[list[TaskMessage]], None] | None = None,
                  durable: bool = True) -> tuple[list[TaskMessage], list[ResultMessage]]:
        """Journal a message's tasks in one commit.

        Returns (to_run, to_publish): new tasks for the engine, and results to (re-)publish
        for tasks that were already done (a redelivery) or cancelled before they arrived.
        Duplicates of queued or running tasks are ignored: they already run.
        `before_commit(to_run)` may start the new tasks before they are written: the message
        is acked only once the commit is on disk, so a crash in between means a redelivery
        and at most a second run, never a lost task. With `durable=False` (WAL mode only)
        the commit is not fsynced here: the caller acks after a later `sync()`.
        """
        to_run: list[TaskMessage] = []
        to_publish: list[ResultMessage] = []
        t = now()
        db = self._tx(durable=durable or not self.wal)
        try:
            rows = [db.execute("SELECT state, result FROM tasks WHERE task_id = ?",
                               (task.task_id,)).fetchone() for task in tasks]
            to_run = [task for task, row in zip(tasks, rows, strict=True) if row is None]
            if before_commit is not None and to_run:
                before_commit(to_run)
            for task, row in zip(tasks, rows, strict=True):
                if row is None:
                    self._seq += 1
                    db.execute("INSERT INTO tasks (task_id, state, task, seq, updated) "
                               "VALUES (?, ?, ?, ?, ?)",
                               (task.task_id, QUEUED, _dump_task(task), self._seq, t))
                elif row[0] == TOMBSTONE:
                    result = cancelled_result(task.task_id, task.task_group_id,
                                              "cancelled before it reached the endpoint")
                    db.execute("UPDATE tasks SET state = ?, task = ?, result = ?, updated = ? "
                               "WHERE task_id = ?", (DONE, _dump_task(task),
                                                     _dump(result), t, task.task_id))
                    to_publish.append(result)
                elif row[0] == DONE:
                    to_publish.append(_load(row[1]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return to_run, to_publish

    def sync(self) -> None:
        """Make every commit so far durable (fsync), whatever thread calls it.

        In WAL mode a commit lives in the -wal file until a checkpoint copies it into the
        database file, and a checkpoint syncs both (synchronous=NORMAL does that much), so
        syncing the -wal covers every commit; without one, the database file holds them.
        """
        with self._sync_lock:
            for path in (f"{self.path}-wal", str(self.path)):
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    os.fsync(fd)
                    if self._deferred and path.endswith("-wal") and \
                            time.monotonic() >= self._next_checkpoint:
                        self._next_checkpoint = time.monotonic() + CHECKPOINT_EVERY
                        self._checkpoint()
                finally:
                    os.close(fd)
                return

    def _checkpoint(self) -> None:
        """Copy the -wal into the database file on a connection of the calling thread's own
        (PASSIVE: the writer goes on meanwhile; the next commit then reuses the -wal)."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(str(self.path), check_same_thread=False,
                                                 isolation_level=None)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def mark_running(self, task_ids: list[str]) -> None:
        db = self._tx()
        db.executemany("UPDATE tasks SET state = ?, updated = ? WHERE task_id = ? AND state = ?",
                       [(RUNNING, now(), tid, QUEUED) for tid in task_ids])
        db.execute("COMMIT")

    def cancel(self, task_id: str) -> str | None:
        """Record a cancel. Returns the task's state before it (None: unknown, now a tombstone)."""
        db = self._tx(durable=True)  # the cancel message is acked after this commit
        row = db.execute("SELECT state FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            db.execute("INSERT INTO tasks (task_id, state, updated) VALUES (?, ?, ?)",
                       (task_id, TOMBSTONE, now()))
        db.execute("COMMIT")
        return row[0] if row else None

    # --- results ------------------------------------------------------------------------------
    def store_results(self, results: Sequence[ResultMessage]) -> list[ResultMessage]:
        """Spool results (one commit); returns those stored, i.e. the first per task.

        One SELECT for the tasks already done and one executemany for the rest: this runs on
        the I/O thread, where a row at a time held up the next task (~1 ms per 20 results)."""
        t = now()
        db = self._tx()
        try:
            done = {row[0] for chunk in _id_chunks([r.task_id for r in results])
                    for row in db.execute(  # by primary key (a state index would scan)
                        f"SELECT task_id, state FROM tasks WHERE task_id IN "
                        f"({','.join('?' * len(chunk))})", chunk) if row[1] == DONE}
            stored: list[ResultMessage] = []
            for r in results:
                if r.task_id not in done:
                    done.add(r.task_id)  # the first result per task wins
                    stored.append(r)
            db.executemany(
                "INSERT INTO tasks (task_id, state, result, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, "
                "result = excluded.result, published = 0, updated = excluded.updated",
                [(r.task_id, DONE, _dump(r), t) for r in stored])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return stored

    def mark_published(self, task_ids: list[str]) -> None:
        db = self._tx()
        db.executemany("UPDATE tasks SET published = 1 WHERE task_id = ? AND state = ?",
                       [(tid, DONE) for tid in task_ids])
        db.execute("COMMIT")

    def prune(self, older_than: float = 7 * 86400) -> int:
        """Forget published results and tombstones older than `older_than` seconds."""
        db = self._tx()
        cur = db.execute("DELETE FROM tasks WHERE updated < ? AND ((state = ? AND published = 1) "
                         "OR state = ?)", (now() - older_than, DONE, TOMBSTONE))
        db.execute("COMMIT")
        return cur.rowcount

    # --- infrastructure failures --------------------------------------------------------------
    def record_failure(self, task_id: str) -> tuple[TaskMessage | None, int]:
        """Count one run of `task_id` lost to infrastructure and queue it again.

        Returns (the task, failures so far); (None, 0) if the task is unknown or finished.
        Committed durably before the re-run, so a task that takes its endpoint down with it
        cannot run forever: the count survives the crash.
        """
        db = self._tx(durable=True)
        try:
            row = db.execute("SELECT task, failures FROM tasks WHERE task_id = ? AND state IN "
                             "(?, ?)", (task_id, QUEUED, RUNNING)).fetchone()
            if row is None or row[0] is None:
                db.execute("COMMIT")
                return None, 0
            failures = int(row[1]) + 1
            db.execute("UPDATE tasks SET state = ?, failures = ?, updated = ? WHERE task_id = ?",
                       (QUEUED, failures, now(), task_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return wire.decode_task(row[0]), failures

    def recover(self, count_running: bool = True) -> list[tuple[TaskMessage, int]]:
        """Unfinished tasks at start, with their failure counts: a task that was running when
        the endpoint stopped (crash, kill, stop) counts one failure (unless `count_running` is
        false: engines whose jobs outlive the endpoint); a queued one does not."""
        db = self._tx(durable=True)
        try:
            if count_running:
                db.execute("UPDATE tasks SET failures = failures + 1, state = ?, updated = ? "
                           "WHERE state = ?", (QUEUED, now(), RUNNING))
            rows = db.execute("SELECT task, failures FROM tasks WHERE state = ? AND task IS NOT "
                              "NULL ORDER BY seq", (QUEUED,)).fetchall()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [(wire.decode_task(r[0]), int(r[1])) for r in rows]

    def failures(self, task_id: str) -> int:
        row = self.db.execute("SELECT failures FROM tasks WHERE task_id = ?",
                              (task_id,)).fetchone()
        return int(row[0]) if row else 0

    # --- recovery -----------------------------------------------------------------------------
    def unfinished(self) -> list[TaskMessage]:
        """Tasks received but without a result (queued or running when the agent stopped)."""
        rows = self.db.execute("SELECT task FROM tasks WHERE state IN (?, ?) ORDER BY seq",
                               (QUEUED, RUNNING)).fetchall()
        return [wire.decode_task(r[0]) for r in rows]

    def unpublished(self) -> list[ResultMessage]:
        """Results whose publish the broker has not confirmed yet."""
        rows = self.db.execute("SELECT result FROM tasks WHERE state = ? AND published = 0 "
                               "ORDER BY updated", (DONE,)).fetchall()
        return [_load(r[0]) for r in rows]

    def figures(self) -> dict[str, object]:
        """Its size for heartbeats: bytes on disk (with the WAL), unfinished tasks by state,
        and results not yet confirmed. Counted in index ranges of the live rows only (not
        the done ones kept for journal_retention): cheap enough for every heartbeat."""
        size = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                size += path.stat().st_size
            except OSError:
                pass
        rows = dict.fromkeys((QUEUED, RUNNING), 0)
        rows.update(self.db.execute("SELECT state, COUNT(*) FROM tasks WHERE state IN (?, ?) "
                                    "GROUP BY state", (QUEUED, RUNNING)))
        (unpublished,) = self.db.execute("SELECT COUNT(*) FROM tasks WHERE published = 0 AND "
                                         "state = ?", (DONE,)).fetchone()
        return {"bytes": size, "tasks": rows, "unpublished": unpublished}

    def state(self, task_id: str) -> str | None:
        row = self.db.execute("SELECT state FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return row[0] if row else None


def _dump_task(task: TaskMessage) -> str:
    return wire.encode(task).decode()  # shallow, as _dump: on the I/O thread per task


def _dump(result: ResultMessage) -> str:
    return wire.encode(result).decode()  # shallow: asdict would deep-copy every value


def _id_chunks(ids: list[str], size: int = 500) -> Iterator[list[str]]:
    """Under SQLite's limit on bound parameters (999 before 3.32)."""
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def _load(text: str) -> ResultMessage:
    return wire.decode_result(text)
