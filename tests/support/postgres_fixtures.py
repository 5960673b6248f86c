"""pytest fixtures `postgres` (one real PostgreSQL server for the session) and `pg_url` (a new
empty database on it per test). Import them in a conftest.py (see tests/postgres/conftest.py).

Missing PostgreSQL is a test failure, not a skip (`make test-deps` installs it).
"""

from __future__ import annotations

import atexit
import shutil
from collections.abc import Iterator

import pytest

from support.postgres import PostgresServer

_server: PostgresServer | None = None


def _stop() -> None:
    global _server
    if _server is not None:
        server, _server = _server, None
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def shared_server() -> PostgresServer:
    """The running server, started on first use; stopped at session end (or process exit)."""
    global _server
    if _server is None:
        server = PostgresServer()
        try:
            server.start()
        except BaseException:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
            raise
        _server = server
        atexit.register(_stop)
    return _server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL: .url(db), .create_database() -> URL, .port, .password."""
    yield shared_server()
    _stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database of this test."""
    return postgres.create_database()
