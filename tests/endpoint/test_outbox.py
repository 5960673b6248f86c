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


def test_results_drained_when_the_connection_breaks_are_journaled_for_the_next_session(
        rabbitmq, amqp_url: str, tmp_path: Path) -> None:
    """A direct-path result (and a status update) taken from the engine's queue while the
    session's connection breaks under the publish to its group: the drain raises (the agent
    reconnects), the result is in the journal as done and unpublished, which the next session
    publishes, and the update is sent by the next drain. Nothing runs the task again: a result
    lost here would leave its future waiting for ever."""
    endpoint_id, name = str(uuid.uuid4()), f"outbox-test-{uuid.uuid4().hex[:8]}"
    task = TaskMessage(task_id=str(uuid.uuid4()), function_id=str(uuid.uuid4()),
                       function="f", payload="p", task_group_id=str(uuid.uuid4()), direct=True)
    journal = Journal(tmp_path / "journal.sqlite")
    journal.add_tasks([task])
    engine = LocalEngine(1, lambda r: None, lambda u: None)  # only asked for its backlog
    outbox = Outbox(endpoint_id, EndpointConfig(broker_url="http://unused"), journal, engine,
                    start_task=lambda t, n: None)
    conn = pika.BlockingConnection(connection_parameters(amqp_url, name))
    session = Session(conn, pika.URLParameters(amqp_url).credentials.username, endpoint_id)
    session.start(amqp_url, journal, lambda: None)
    try:
        outbox.session = session
        outbox.track(task)
        # No queue is bound for this group: the group sender declines, the drain publishes.
        assert outbox.add_result(ResultMessage(task_id=task.task_id, status="success",
                                               result="03\n1",
                                               task_group_id=task.task_group_id)) is False
        other = str(uuid.uuid4())
        outbox.add_status(StatusUpdate(task_id=other, status=wire.TaskState.RUNNING.value))
        close_from_rabbitmq(rabbitmq, name)

        with pytest.raises((pika.exceptions.AMQPError, OSError)):
            outbox.drain()

        assert journal.state(task.task_id) == DONE
        assert [r.task_id for r in journal.unpublished()] == [task.task_id]
        outbox.session = None
        put_back = outbox._items.get_nowait()
        assert put_back[0] == "status" and put_back[1].task_id == other
    finally:
        session.stop_results()
        session.close()
