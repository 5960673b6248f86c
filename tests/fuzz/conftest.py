"""Fixtures of the bad-input suite: a user of its own with an endpoint nobody serves, and a raw
pika channel that plays a (misbehaving) endpoint on the session broker's RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
import requests

from fnrelay import wire


class Api:
    """Raw HTTP to the broker with one user's token."""

    def __init__(self, url: str, token: str):
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**self.headers, **kw.pop("headers", {})}
        r = requests.request(method, f"{self.url}/v1{path}", headers=headers, timeout=30, **kw)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()


@pytest.fixture(scope="module")
def api(broker) -> Api:
    return Api(broker.url, broker.add_user(f"bad-input-{uuid.uuid4().hex[:6]}"))


@pytest.fixture(scope="module")
def registration(api: Api) -> dict[str, Any]:
    """An endpoint registered but never started (its tasks stay queued for us to inspect):
    the broker's answer to POST /v1/endpoints, with its own `amqp_url` and `task_queue`."""
    return api("POST", "/endpoints", json={"name": "idle"})


@pytest.fixture(scope="module")
def idle_endpoint(registration: dict[str, Any]) -> str:
    return registration["endpoint_id"]


def _submit(api: Api, endpoint_id: str, function: str, payload: str,
            task_group_id: str | None = None) -> tuple[str, str]:
    fid = api("POST", "/functions", json={"function": function, "function_name": "f"})
    body = {"endpoint_id": endpoint_id, "task_group_id": task_group_id,
            "tasks": [{"function_id": fid["function_id"], "payload": payload}]}
    out = api("POST", "/submit", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    return out["task_ids"][0], out["task_group_id"]


@pytest.fixture(scope="module")
def submit(api: Api) -> Callable[..., tuple[str, str]]:
    """submit(endpoint_id, function, payload, task_group_id=None) -> (task_id, group_id):
    registers the (serialized) function text and submits one task with that payload."""
    return lambda *args, **kw: _submit(api, *args, **kw)


@pytest.fixture(scope="module")
def channel(registration: dict[str, Any]) -> Iterator[Any]:
    """A raw pika channel with the idle endpoint's own AMQP account (publisher confirms on):
    what a buggy or hostile endpoint could send, the broker gets from here."""
    params = pika.URLParameters(registration["amqp_url"])
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.user_id = params.credentials.username  # RabbitMQ checks it against the account
    yield ch
    conn.close()


def _publish(ch: Any, endpoint_id: str, kind: str | None, body: bytes) -> None:
    ch.basic_publish(wire.RESULTS_EXCHANGE, endpoint_id, body,
                     pika.BasicProperties(type=kind, delivery_mode=2, user_id=ch.user_id,
                                          content_type=wire.CONTENT_TYPE))


@pytest.fixture(scope="module")
def publish_as_endpoint(channel: Any) -> Callable[[str, str | None, bytes], None]:
    """publish_as_endpoint(endpoint_id, kind, body): what an endpoint sends, to fnrelay.results
    with its id as routing key and its account as user_id."""
    return lambda endpoint_id, kind, body: _publish(channel, endpoint_id, kind, body)
