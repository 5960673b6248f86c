"""With its database down, the broker answers 503 naming the database, and the SDK shows that
(after its retries), not "internal error: OperationalError" (issue 24)."""

from __future__ import annotations

import logging
import shutil
import threading

import pytest

from fnrelay import Client, errors
from support.postgres import PostgresServer


@pytest.fixture
def amqp_url(new_vhost) -> str:  # type: ignore[no-untyped-def]
    """A vhost of this test's broker alone: the session's broker (another database) holds
    the shared one, and a broker of another database is refused on it."""
    return new_vhost("fnrelay-dbdown-test")


@pytest.fixture
def own_postgres():  # type: ignore[no-untyped-def]
    """A PostgreSQL of this test alone: it is stopped mid-test."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


def test_database_down_is_a_503_naming_it_and_the_sdk_says_so(start_broker, amqp_url,
                                                                own_postgres, caplog):
    db_url = own_postgres.create_database()
    broker = start_broker(amqp_url, db_url)
    client = Client(broker.url, broker.add_user())
    client.retry_config.max_retries = 2  # the rule of ~15 s of retries, in 1.5 s
    assert client.whoami()
    own_postgres.stop()

    name = db_url.rsplit("/", 1)[1]
    said = (f"database unavailable: the broker's PostgreSQL database {name!r} does not answer "
            "(OperationalError); retry later")
    caplog.set_level(logging.WARNING, logger="fnrelay")
    with pytest.raises(errors.BrokerUnavailableError) as raised:
        client.whoami()
    assert str(raised.value) == said
    assert raised.value.http_status == 503
    # This call's records only: an earlier module's Executor may still be polling its broker.
    ours = [r for r in caplog.records
            if r.name.startswith("fnrelay") and r.thread == threading.get_ident()]
    assert [r.getMessage() for r in ours] == [
        f"the broker at {broker.url} answers HTTP 503 ({said}); retrying for about 2 s"]
