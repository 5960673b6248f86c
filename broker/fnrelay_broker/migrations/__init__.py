"""Alembic schema migrations of the broker database, run at every broker start and by
`fnrelay-broker db upgrade`; `fnrelay-broker db revision -m "what changed"` adds one.

Every run happens in one transaction that first takes a lock (PostgreSQL: an advisory lock;
SQLite: the write lock of BEGIN IMMEDIATE), so replicas that start together migrate once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import Script
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from fnrelay_broker.models import Base

#: The revision equal to the schema that `create_all` made before migrations existed.
BASELINE = "0001"
_HERE = Path(__file__).resolve().parent
_LOCK_KEY = 0x666E72656C6179  # "fnrelay": the advisory lock that serializes migrations


def config(connection: Connection | None = None) -> Config:
    """An Alembic Config for our scripts (no alembic.ini), bound to `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


def _locked(engine: Engine) -> Connection:
    conn = engine.connect()
    conn.begin()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    return conn


def current(engine: Engine) -> str | None:
    """The database's revision (None: not under migrations yet)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`. A database made by `create_all` before migrations
    existed (tables, no alembic_version) is stamped at the baseline first."""
    conn = _locked(engine)
    try:
        names = set(inspect(conn).get_table_names())
        if "alembic_version" not in names and names & set(Base.metadata.tables):
            command.stamp(config(conn), BASELINE)
        command.upgrade(config(conn), revision)
        conn.commit()
    finally:
        conn.close()


def revision(engine: Engine, message: str) -> str:
    """Autogenerate a revision file from the models' difference to `engine`'s database
    (which is upgraded to head first); returns the new file's path."""
    upgrade(engine)
    with engine.connect() as conn:
        script = command.revision(config(conn), message=message, autogenerate=True,
                                  rev_id=_next_rev_id())
    if not isinstance(script, Script):  # alembic may also return none or several
        raise RuntimeError(f"alembic made no single revision: {script!r}")
    return str(script.path)


def _next_rev_id() -> str:
    """Revisions are numbered 0001, 0002, ...: their order is readable from the file names."""
    numbers = [int(p.name[:4]) for p in (_HERE / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")]
    return f"{max(numbers, default=0) + 1:04d}"


def schema_diff(engine: Engine) -> list:
    """Alembic's compare_metadata between the models and the database: [] when they agree."""
    from alembic.autogenerate import compare_metadata

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)
