"""Fixtures for broker tests: those of support.broker_fixtures (real RabbitMQ, real
`fnrelay-broker serve` processes, raw HTTP as one user, a task store on SQLite)."""

from support.broker_fixtures import (  # noqa: F401
    Api,
    BrokerProcess,
    TaskStore,
    amqp,
    amqp_url,
    api,
    broker,
    make_task_store,
    other_api,
    start_broker,
    task_store,
)
