"""The endpoint's outbox against a real RabbitMQ: what engines report survives a connection
that RabbitMQ breaks while the outbox publishes it."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pika
import pytest
import requests

from fnrelay import wire
from fnrelay.amqp import connection_parameters
from fnrelay.wire import ResultMessage, StatusUpdate, TaskMessage
from fnrelay_broker.amqp import declare_exchanges
from fnrelay_endpoint.agent.journal import DONE, Journal
from fnrelay_endpoint.agent.outbox import Outbox
from fnrelay_endpoint.agent.session import Session
from fnrelay_endpoint.config.model import EndpointConfig
from fnrelay_endpoint.engines.local.engine import LocalEngine
from support.waiting import wait_for


def close_from_rabbitmq(rabbitmq, name: str) -> None:  # type: ignore[no-untyped-def]
    """Close the client connection called `name` as RabbitMQ does when its node stops."""
    api, auth = rabbitmq.management_url.rstrip("/"), rabbitmq.admin_auth

    def named() -> list[str]:
        r = requests.get(f"{api}/api/connections", auth=auth, timeout=10)
        r.raise_for_status()
        return [c["name"] for c in r.json()
                if (c.get("client_properties") or {}).get("connection_name") == name]

    (key,) = wait_for(named, f"RabbitMQ to list the connection {name}")
    # RabbitMQ sends its Connection.Close before it answers; its listing lags (stats).
    requests.delete(f"{api}/api/connections/{quote(key, safe='')}", auth=auth,
                    timeout=10).raise_for_status()


def start_session(amqp_url: str, name: str, endpoint_id: str, journal: Journal) -> Session:
    conn = pika.BlockingConnection(connection_parameters(amqp_url, name))
    session = Session(conn, pika.URLParameters(amqp_url).credentials.username, endpoint_id)
    session.start(amqp_url, journal, lambda: None)
    return session


def end_session(session: Session) -> None:
    session.stop_results()
    session.close()


def test_results_drained_when_the_connection_breaks_are_published_by_the_next_session(
        rabbitmq, new_vhost, tmp_path: Path) -> None:
    """A direct-path result and a status update, taken from the engine's queue while RabbitMQ
    closes the session's connection: the drain raises (the agent reconnects), the result is
    journaled as done, and the next session sends both to the broker. Nothing runs the task
    again: a result lost here would leave its future waiting for ever."""
    amqp_url = new_vhost("fnrelay-outbox")
    endpoint_id = str(uuid.uuid4())
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as setup:  # closed at the end
        ch = setup.channel()
        declare_exchanges(ch)
        to_broker = ch.queue_declare("", exclusive=True).method.queue  # as the broker's binds
        ch.queue_bind(to_broker, wire.RESULTS_EXCHANGE, routing_key=endpoint_id)

        task = TaskMessage(task_id=str(uuid.uuid4()), function_id=str(uuid.uuid4()),
                           function="f", payload="p", task_group_id=str(uuid.uuid4()), direct=True)
        journal = Journal(tmp_path / "journal.sqlite")
        journal.add_tasks([task])
        engine = LocalEngine(1, lambda r: None, lambda u: None)  # only asked for its backlog
        outbox = Outbox(endpoint_id, EndpointConfig(broker_url="http://unused"), journal, engine,
                        start_task=lambda t, n: None)
        name = f"outbox-test-{uuid.uuid4().hex[:8]}"
        first = start_session(amqp_url, name, endpoint_id, journal)
        try:
            outbox.session = first
            outbox.track(task)
            # No group queue is bound: the group sender declines, the drain publishes.
            assert outbox.add_result(ResultMessage(task_id=task.task_id, status="success",
                                                   result="03\n1",
                                                   task_group_id=task.task_group_id)) is False
            other = str(uuid.uuid4())
            outbox.add_status(StatusUpdate(task_id=other, status=wire.TaskState.RUNNING.value))
            close_from_rabbitmq(rabbitmq, name)

            with pytest.raises(pika.exceptions.AMQPConnectionError):
                outbox.drain()
            assert journal.state(task.task_id) == DONE
        finally:
            outbox.session = None
            end_session(first)

        second = start_session(amqp_url, f"{name}-again", endpoint_id, journal)
        try:
            outbox.session = second
            outbox.publish_results(journal.unpublished())  # as the agent's next session starts
            outbox.drain()
            got: dict[str, list[str]] = {}

            def both() -> bool:
                method, props, body = ch.basic_get(to_broker, auto_ack=True)
                if method is not None:
                    items = (wire.decode_results(body) if props.type == wire.MSG_RESULTS
                             else wire.decode_status(body))
                    got.setdefault(props.type, []).extend(i.task_id for i in items)
                return len(got) == 2

            wait_for(both, "the result and the status update at the broker's binding")
            assert got == {wire.MSG_RESULTS: [task.task_id], wire.MSG_STATUS: [other]}

            def marked() -> bool:  # as each drain of the agent does
                outbox.mark_published(second)
                return not journal.unpublished()

            wait_for(marked, "the journal to mark the result published", timeout=10)
        finally:
            outbox.session = None
            end_session(second)
            setup.close()
