"""A multi-user manager obeys control messages from the broker's RabbitMQ account only.

Someone else with a RabbitMQ account that may publish to `fnrelay.tasks` forges a
`start-child` for alice: the manager drops it and logs why, and no child starts. Claiming to
be the broker (its `user_id`) is refused by RabbitMQ itself."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
import requests

from fnrelay import wire
from fnrelay.amqp import connection_parameters
from fnrelay.wire import StartChild
from support.waiting import wait_for


def _children(manager) -> list[dict]:  # type: ignore[no-untyped-def]
    try:
        return json.loads((manager.dir / "children.json").read_text())["children"]
    except (OSError, ValueError):
        return []


def _log(manager) -> str:  # type: ignore[no-untyped-def]
    return Path(manager.dir / "endpoint.log").read_text()


@pytest.fixture
def forger_url(rabbitmq) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A RabbitMQ account of the broker's virtual host that may publish to fnrelay.tasks."""
    api, auth = rabbitmq.management_url.rstrip("/") + "/api", rabbitmq.admin_auth
    params = pika.URLParameters(rabbitmq.amqp_url)
    vhost = quote(params.virtual_host, safe="")
    name, password = f"mallory-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    requests.put(f"{api}/users/{name}", auth=auth, timeout=10,
                 json={"password": password, "tags": ""}).raise_for_status()
    requests.put(f"{api}/permissions/{vhost}/{name}", auth=auth, timeout=10,
                 json={"configure": "^$", "read": "^$",
                       "write": "^fnrelay\\.tasks$"}).raise_for_status()
    host = f"{params.host}:{params.port}"
    yield f"amqp://{name}:{password}@{host}/{vhost}"
    requests.delete(f"{api}/users/{name}", auth=auth, timeout=10)


def _publish(url: str, manager_id: str, body: bytes, user_id: str | None) -> None:
    conn = pika.BlockingConnection(connection_parameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(wire.TASKS_EXCHANGE, wire.control_routing_key(manager_id),
                         body, pika.BasicProperties(
                             type=wire.MSG_START_CHILD, content_type=wire.CONTENT_TYPE,
                             delivery_mode=2, user_id=user_id), mandatory=True)
    finally:
        if conn.is_open:
            conn.close()


def test_forged_start_child_is_dropped(make_manager, client, broker, accounts, forger_url):
    manager = make_manager()
    alice = client.whoami()["user_id"]
    child = str(uuid.uuid4())  # child ids are the broker's (random): any will do here
    body = wire.encode({"v": wire.PROTOCOL_VERSION, **asdict(StartChild(
        child_id=child, user_id=alice, username="alice", user_endpoint_config={}))})
    forger = pika.URLParameters(forger_url).credentials.username

    _publish(forger_url, manager.endpoint_id, body, forger)  # routed: confirmed, not returned
    _publish(forger_url, manager.endpoint_id, body, None)
    wait_for(lambda: _log(manager).count("dropping a 'start-child' control "
                                                   "message") >= 2,
             "the manager to drop both forged start-child messages")
    log = _log(manager)
    assert f"from RabbitMQ user '{forger}'" in log
    assert "from RabbitMQ user None" in log

    # Claiming to be the broker does not get that far: RabbitMQ checks user_id.
    broker_user = pika.URLParameters(broker.amqp_url).credentials.username
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        _publish(forger_url, manager.endpoint_id, body, broker_user)
    assert refused.value.reply_code == 406

    assert _children(manager) == []
    assert "started child" not in _log(manager)
    ps = subprocess.run(["pgrep", "-u", accounts["a"]], capture_output=True, text=True)
    assert ps.stdout == "", f"processes of {accounts['a']}: {ps.stdout}"
