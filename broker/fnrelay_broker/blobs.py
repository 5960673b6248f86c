"""Result blobs: results too large for a message, kept where every broker replica can read them.

A broker started with `--blob-store db` keeps the bytes in its database (ResultBlobChunk rows
of at most CHUNK bytes); with `--blob-store DIR`, as files named by task id in a directory
that every replica mounts. Either way a ResultBlob row says how big the blob is, its SHA-256
and where it is, so any replica serves it and the TTL cleanup deletes it with its task.

An upload is spooled to a file first (hashed and counted as it arrives), then stored in one
short transaction that holds the task's row lock: a slow network never holds the database's
write lock, no blob is ever whole in memory, and "first genuine result wins" holds: once the
task has its result, its blob never changes. The broker never deserializes a blob.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from fnrelay.blobs import BlobRef
from fnrelay.wire import TERMINAL_VALUES, now
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError, not_found
from fnrelay_broker.models import Endpoint, ResultBlob, ResultBlobChunk, Task

#: Bytes per database chunk and per piece streamed to a client.
CHUNK = 1024 * 1024
DB = "db"
DIR = "dir"
_SPOOL_PREFIX = ".upload-"


class BlobStoreConfigError(ValueError):
    """`--blob-store` names neither `db` nor a writable directory."""


@dataclass(frozen=True)
class Blob:
    """A stored blob, ready to stream: its size and its pieces."""

    size: int
    sha256: str
    pieces: Iterator[bytes]


class BlobStore:
    """Where this broker keeps new blobs (`directory` None: in the database), up to `limit`."""

    def __init__(self, db: Database, limit: int, directory: Path | None = None):
        self.db, self.limit, self.directory = db, limit, directory

    @classmethod
    def open(cls, db: Database, spec: str | None, limit: int) -> BlobStore | None:
        """The store `spec` names ('db' or a directory path); None when it is unset."""
        if not spec:
            return None
        if limit < 1:
            raise BlobStoreConfigError(f"the blob limit must be positive, not {limit}")
        if spec == DB:
            return cls(db, limit)
        path = Path(spec).expanduser()
        if not path.is_absolute():
            raise BlobStoreConfigError(
                f"--blob-store {spec!r}: give 'db' or an absolute directory path")
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            raise BlobStoreConfigError(
                f"--blob-store {spec}: not a writable directory (every broker replica must "
                "mount it)")
        return cls(db, limit, path.resolve())

    @property
    def kind(self) -> str:
        return DB if self.directory is None else DIR

    def advertised(self) -> dict[str, int | str]:
        """What endpoints are told (registration answer, /v1/version)."""
        return {"max_bytes": self.limit, "store": self.kind}

    # --- upload ----------------------------------------------------------------------------
    def spool(self) -> tuple[int, Path]:
        """A new spool file (fd, path): beside the blobs for a directory store (so storing is
        a rename), else in the temporary directory (TMPDIR)."""
        fd, name = tempfile.mkstemp(prefix=_SPOOL_PREFIX, dir=self.directory)
        return fd, Path(name)

    def check_uploader(self, user_id: str, endpoint_id: str, task_id: str) -> None:
        """404 unless `endpoint_id` is the user's and the task was routed to it (checked
        before the body is read, so strangers cannot make the broker spool anything)."""
        with self.db.read() as s:
            _uploadable_task(s, user_id, endpoint_id, task_id)

    def put(self, user_id: str, endpoint_id: str, task_id: str, spool: Path,
            ref: BlobRef) -> bool:
        """Store the spooled upload as the task's blob; False if that same blob is already
        the task's recorded result (a repeated upload). 409 if the task has another result."""
        with self.db.write() as s:
            task = _uploadable_task(s, user_id, endpoint_id, task_id, lock=True)
            old = s.get(ResultBlob, task_id)
            if task.status in TERMINAL_VALUES:
                if old is not None and old.sha256 == ref.sha256 and old.size == ref.size:
                    return False
                raise ApiError(409, f"task {task_id} already has its result ({task.status}); "
                                    "its blob cannot change")
            if old is not None:
                s.execute(delete(ResultBlobChunk).where(ResultBlobChunk.task_id == task_id))
                s.delete(old)
                s.flush()
            if self.directory is None:
                _insert_chunks(s, task_id, spool)
            else:
                os.replace(spool, self.directory / task_id)
            s.add(ResultBlob(task_id=task_id, size=ref.size, sha256=ref.sha256,
                             store=self.kind, created=now()))
        return True

    # --- download --------------------------------------------------------------------------
    def get(self, user_id: str, task_id: str) -> Blob:
        """The blob of the user's finished task; 404 for anyone else's task (as if unknown)."""
        with self.db.read() as s:
            task = s.scalar(select(Task).where(Task.id == task_id))
            if task is None or task.owner != user_id:
                raise not_found("task", task_id)
            blob = s.get(ResultBlob, task_id)
            if blob is None or task.status not in TERMINAL_VALUES:
                raise ApiError(404, f"task {task_id} has no result blob")
            size, sha, where = blob.size, blob.sha256, blob.store
        if where == DB:
            return Blob(size, sha, self._db_pieces(task_id, size))
        if self.directory is None:
            raise ApiError(503, f"the result blob of task {task_id} is in a blob directory "
                                "this broker is not configured with (--blob-store)")
        try:
            f = (self.directory / task_id).open("rb")
        except FileNotFoundError:
            raise ApiError(404, f"task {task_id} has no result blob") from None
        return Blob(size, sha, _file_pieces(f))

    def _db_pieces(self, task_id: str, size: int) -> Iterator[bytes]:
        for seq in range(-(-size // CHUNK)):
            with self.db.read() as s:
                data = s.scalar(select(ResultBlobChunk.data).where(
                    ResultBlobChunk.task_id == task_id, ResultBlobChunk.seq == seq))
            if data is None:  # deleted meanwhile: the client sees a short blob
                return
            yield data

    # --- cleanup ---------------------------------------------------------------------------
    def remove_files(self, task_ids: list[str]) -> None:
        """Delete the files of these tasks' blobs (after their rows went)."""
        if self.directory is None:
            return
        for tid in task_ids:
            (self.directory / tid).unlink(missing_ok=True)


def delete_rows(s: Session, task_ids: list[str]) -> list[str]:
    """Delete the blobs of these tasks (in the caller's transaction); returns the ids whose
    blob is a file, to remove once the transaction committed."""
    files = list(s.scalars(select(ResultBlob.task_id).where(
        ResultBlob.task_id.in_(task_ids), ResultBlob.store == DIR)))
    s.execute(delete(ResultBlobChunk).where(ResultBlobChunk.task_id.in_(task_ids)))
    s.execute(delete(ResultBlob).where(ResultBlob.task_id.in_(task_ids)))
    return files


def _uploadable_task(s: Session, user_id: str, endpoint_id: str, task_id: str,
                     lock: bool = False) -> Task:
    ep = s.get(Endpoint, endpoint_id)
    query = select(Task).where(Task.id == task_id)
    task = s.scalar(query.with_for_update() if lock else query)
    if ep is None or ep.owner != user_id or task is None or task.endpoint_id != endpoint_id:
        raise not_found("task", task_id)
    return task


def _insert_chunks(s: Session, task_id: str, spool: Path) -> None:
    with spool.open("rb") as f:
        seq = 0
        while piece := f.read(CHUNK):
            s.execute(insert(ResultBlobChunk).values(task_id=task_id, seq=seq, data=piece))
            seq += 1


def _file_pieces(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while piece := f.read(CHUNK):
            yield piece
