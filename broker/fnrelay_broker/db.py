"""Engine and sessions. SQLite gets WAL and write transactions that take the lock up front;
PostgreSQL (for several broker replicas) is reached with psycopg 3.

In WAL mode a deferred transaction that reads and then writes fails at once (SQLITE_BUSY,
not retried by busy_timeout) when another connection committed in between; so writers use
`BEGIN IMMEDIATE` (a second engine), and readers the plain engine.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from fnrelay.config import private_mkdir

BUSY_TIMEOUT_MS = 30_000


#: The password part of a URL that may not parse (`scheme://user:PASSWORD@host...`).
_PASSWORD = re.compile(r"(://[^/@:]*:)[^@]*@")


def redact_url(url: str) -> str:
    """`url` without its password, for messages and logs (also when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _PASSWORD.sub(r"\1***@", url)


def redact(text: str, url: str) -> str:
    """`text` (e.g. a driver's error message) with the password of `url` blotted out."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password or "", unquote(password or "")} - {""}:
        text = text.replace(secret, "***")
    return text


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver the broker extra installs),
    not SQLAlchemy's default psycopg2. A malformed URL raises ArgumentError (say, a port that
    is not a number: SQLAlchemy's own ValueError would not name the problem)."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1)
                          if url.startswith("postgres://") else url)
    except ValueError as e:
        raise ArgumentError(f"malformed database URL ({e})") from e
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        pool_size=10,
        max_overflow=20,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _create_private(path: Path) -> None:
    """A new SQLite database: its missing directories 0700, its file 0600 (every payload and
    result is in it; SQLite gives the -wal and -shm files the database file's mode). An
    existing file keeps the mode its owner chose."""
    if str(path).startswith("file:"):
        return  # a URI: SQLite opens it
    private_mkdir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class Database:
    """Owns the engines; `read()` and `write()` give sessions in one transaction each."""

    def __init__(self, url: str):
        url = normalize_url(url)
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                _create_private(Path(parsed.database).expanduser())
            self.engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            self.write_engine = self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return redact_url(self.url)

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration (idempotent; safe for replicas that start
        together). A database made before migrations existed is adopted, not re-created."""
        from fnrelay_broker import migrations

        migrations.upgrade(self.write_engine)

    def create_tables(self) -> None:
        """Kept for callers: the schema comes from the migrations (see `migrate`)."""
        self.migrate()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()
