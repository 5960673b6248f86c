"""Schema migrations (Alembic): they build exactly the models' schema on SQLite and PostgreSQL,
`fnrelay-broker db upgrade` applies them, a database made before migrations existed is
adopted, and replicas that start together migrate once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from fnrelay_broker import migrations
from fnrelay_broker.db import Database
from fnrelay_broker.models import User

BROKER_CLI = str(Path(sys.executable).parent / "fnrelay-broker")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'broker.db'}"
    return request.getfixturevalue("postgres").create_database()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROKER_CLI, *args], capture_output=True, text=True)


def test_db_upgrade_builds_exactly_the_models_schema(empty_db_url):
    out = _cli("db", "upgrade", "--db", empty_db_url)
    assert out.returncode == 0, out.stderr
    assert f"to {migrations.head()}" in out.stdout
    db = Database(empty_db_url)
    try:
        assert migrations.current(db.engine) == migrations.head()
        # If this fails after a models.py change: `fnrelay-broker db revision -m "..."`.
        assert migrations.schema_diff(db.engine) == []
        db.migrate()  # what every broker start does: nothing, on an up-to-date schema
        assert migrations.current(db.engine) == migrations.head()
    finally:
        db.dispose()


def test_database_made_before_migrations_is_adopted_with_its_data(empty_db_url):
    db = Database(empty_db_url)
    try:
        # What brokers made with create_all before migrations existed: the baseline schema
        # without alembic's version table.
        migrations.upgrade(db.write_engine, migrations.BASELINE)
        with db.write() as s:
            s.execute(text("DROP TABLE alembic_version"))
        with db.write() as s:
            s.execute(insert(User), [{"id": "u1", "username": "alice", "created": 1.0}])
        db.migrate()
        assert migrations.current(db.engine) == migrations.head()
        assert migrations.schema_diff(db.engine) == []
        with db.read() as s:
            assert s.scalars(select(User.username)).all() == ["alice"]
    finally:
        db.dispose()


def test_replicas_starting_together_migrate_once(postgres):
    url = postgres.create_database()
    errors: list[BaseException] = []

    def start() -> None:
        db = Database(url)
        try:
            db.migrate()
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = Database(url)
    try:
        assert migrations.current(db.engine) == migrations.head()
        assert migrations.schema_diff(db.engine) == []
    finally:
        db.dispose()


def test_unreachable_database_is_a_one_line_error_without_the_password(postgres):
    secret = uuid.uuid4().hex
    # By environment, as docs/deployment.md says (on the command line it would warn first).
    out = subprocess.run([BROKER_CLI, "db", "upgrade"], capture_output=True, text=True, env={
        **os.environ,
        "FNRELAY_BROKER_DB": f"postgresql://fnrelay:{secret}@127.0.0.1:{postgres.port}/nosuchdb"})
    assert out.returncode == 1
    assert out.stderr.startswith("error: cannot migrate ") and out.stderr.count("\n") == 1
    assert secret not in out.stderr and "Traceback" not in out.stderr
