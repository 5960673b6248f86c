"""The broker's database schema (SQLAlchemy 2.x): one schema for SQLite and PostgreSQL.

Times are floats (seconds since the epoch), the one time format of the wire protocol.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    #: Every model maps one Table (SQLAlchemy types it as any FromClause), which the bulk
    #: statements of tasks.py and direct.py use directly.
    __table__: ClassVar[Table]


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    created: Mapped[float] = mapped_column(Float)


class Token(Base):
    """An API token, stored only as its SHA-256 hex digest."""

    __tablename__ = "tokens"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="user")  # 'user' | 'endpoint'
    created: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: An endpoint token's endpoint: it may register only that endpoint (and its children).
    endpoint_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class Function(Base):
    __tablename__ = "functions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    body: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)
    #: How `body` is serialized (fnrelay.wire.FORMATS): the route it was registered by.
    format: Mapped[str] = mapped_column(String(16), server_default="fnrelay")


class Endpoint(Base):
    __tablename__ = "endpoints"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="registered")
    #: What the last heartbeat said of the endpoint (engine, workers in use, Python versions):
    #: its owner's status page and the SDK's version check read it.
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created: Mapped[float] = mapped_column(Float)
    #: When a manager last got this child's credentials: its account is in use from then on,
    #: before the child connects or heartbeats (see reclaim).
    handed_out: Mapped[float | None] = mapped_column(Float, nullable=True)


class TaskGroup(Base):
    __tablename__ = "task_groups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created: Mapped[float] = mapped_column(Float)
    #: When an Executor last asked for the group (POST /v1/task_groups): its reader account
    #: is in use from then on, before any of its tasks is recorded (see reclaim).
    handed_out: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The endpoint this group's account may publish tasks to (the direct path's grant),
    #: so that deleting the endpoint revokes the grant.
    direct_endpoint: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)


class DeletedEndpoint(Base):
    """An endpoint id that was deleted: its owner is told so (others see it as unknown)."""

    __tablename__ = "deleted_endpoints"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(36))
    deleted: Mapped[float] = mapped_column(Float)


class BrokerSecret(Base):
    """Secrets the broker replicas share (e.g. the key of the queue names)."""

    __tablename__ = "broker_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class DashboardSession(Base):
    """A dashboard login: the cookie holds a random session id, this row only its digest
    (whoever reads the database cannot make a cookie), the token's digest (revoking the
    token ends the session) and when it expires. Logout deletes the row."""

    __tablename__ = "dashboard_sessions"
    id_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64))
    expires: Mapped[float] = mapped_column(Float, index=True)


class Task(Base):
    """A task; `seq` (autoincrement) keeps submission order."""

    __tablename__ = "tasks"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    owner: Mapped[str] = mapped_column(String(36))  # ix_tasks_owner_seq
    endpoint_id: Mapped[str] = mapped_column(String(36), index=True)
    function_id: Mapped[str] = mapped_column(String(36))
    task_group_id: Mapped[str] = mapped_column(String(36))  # ix_tasks_group_seq
    status: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    resource_specification: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    user_endpoint_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    max_retries: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: How payload and result are serialized (fnrelay.wire.FORMATS): the route it came by.
    format: Mapped[str] = mapped_column(String(16), server_default="fnrelay")
    #: Globus Compute tasks: the strategies the submitter asked the result in.
    result_serializers: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    #: The submitter's Python "major.minor", forwarded to the endpoint (None: unknown).
    python_version: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    exception: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[float] = mapped_column(Float)
    completed: Mapped[float | None] = mapped_column(Float, nullable=True)


class TaskHistory(Base):
    """Every state a task went through: its provenance."""

    __tablename__ = "task_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(32))
    time: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="")


class Outbox(Base):
    """Messages committed with the change that caused them, published later by OutboxPublisher.

    kind: 'task' (send the task to its endpoint), 'cancel' (tell the endpoint to drop it),
    'result' (forward the task's terminal record to its task group's queue).
    """

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    endpoint_id: Mapped[str] = mapped_column(String(36))
    task_id: Mapped[str] = mapped_column(String(36), index=True)


class Submission(Base):
    """The stored answer of a submit request, keyed by the client's idempotency key."""

    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(36))
    key: Mapped[str] = mapped_column(String(200))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_submission_user_key"),)


class ResultBlob(Base):
    """A task's result kept as a blob (too large for a message): what and where it is.

    `store` is 'db' (the bytes are ResultBlobChunk rows) or 'dir' (a file named by the task id
    in the broker's shared blob directory). Deleted with its task.
    """

    __tablename__ = "result_blobs"
    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    store: Mapped[str] = mapped_column(String(8))
    created: Mapped[float] = mapped_column(Float)


class ResultBlobChunk(Base):
    """One piece (at most blobs.CHUNK bytes) of a blob kept in the database, so neither
    upload nor download ever holds a whole blob in memory."""

    __tablename__ = "result_blob_chunks"
    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


Index("ix_tasks_group_seq", Task.task_group_id, Task.seq)
#: A user's tasks newest first (GET /v1/tasks pages by seq); covers lookups by owner alone.
Index("ix_tasks_owner_seq", Task.owner, Task.seq)
#: The predicate of a task not finished yet, as SQL text: the partial index below and the
#: queued-tasks quota's count (tasks.open_tasks) must use the very same text for the planner
#: (SQLite and PostgreSQL) to pick the index.
OPEN_TASK = "status NOT IN ('success', 'failed', 'cancelled')"
#: A user's unfinished tasks, counted at each submit (the per-user quota): small however many
#: finished tasks the user keeps.
Index("ix_tasks_owner_open", Task.owner,
      sqlite_where=text(OPEN_TASK), postgresql_where=text(OPEN_TASK))
