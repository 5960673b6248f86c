"""Attacks through the public interfaces: the broker fixtures of tests/broker (real RabbitMQ,
real `fnrelay-broker serve` processes, raw HTTP as one user)."""

from support.broker_fixtures import (  # noqa: F401
    Api,
    BrokerProcess,
    amqp,
    amqp_url,
    api,
    broker,
    other_api,
    start_broker,
)
