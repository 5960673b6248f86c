"""The broker on PostgreSQL: a real server for the session (support.postgres), and the broker
test fixtures of tests/broker (start_broker, a private RabbitMQ vhost, Api, amqp) with `broker`
overridden to use a PostgreSQL database, so broker tests re-run here on PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from fnrelay_broker.auth import create_user
from fnrelay_broker.db import Database
from support import broker_fixtures as _broker_fixtures
from support.postgres_fixtures import pg_url, postgres  # noqa: F401

Api = _broker_fixtures.Api
BrokerProcess = _broker_fixtures.BrokerProcess
amqp = _broker_fixtures.amqp
amqp_url = _broker_fixtures.amqp_url
start_broker = _broker_fixtures.start_broker


@pytest.fixture(scope="session")
def broker(start_broker, amqp_url, postgres):  # type: ignore[no-untyped-def]  # noqa: F811
    """`fnrelay-broker serve` on a PostgreSQL database of its own."""
    return start_broker(amqp_url, postgres.create_database(), "--payload-limit",
                        str(1024 * 1024))


_databases: dict[str, Database] = {}


def add_user(db_url: str) -> str:
    """A new user's token, made in-process (the CLI's way costs a Python start per user)."""
    if db_url not in _databases:
        _databases[db_url] = Database(db_url)
    return create_user(_databases[db_url], f"user-{uuid.uuid4().hex[:8]}")[1]


@pytest.fixture
def api(broker):  # type: ignore[no-untyped-def]  # noqa: F811
    return Api(broker.url, add_user(broker.db_url))


@pytest.fixture
def other_api(broker):  # type: ignore[no-untyped-def]  # noqa: F811
    return Api(broker.url, add_user(broker.db_url))


@pytest.fixture
def task_store(postgres):  # type: ignore[no-untyped-def]  # noqa: F811
    """tests/broker's in-process task store, on a PostgreSQL database of its own."""
    store = _broker_fixtures.make_task_store(postgres.create_database())
    yield store
    store.db.dispose()


@pytest.fixture(scope="session", autouse=True)
def _close_databases():  # type: ignore[no-untyped-def]
    yield
    for db in _databases.values():
        db.dispose()
