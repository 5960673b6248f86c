"""Queue names no one can guess: HMAC-SHA256 of the id under a key only the broker holds.

RabbitMQ answers a passive `queue.declare` without a permission check, so anyone with an
account learns whether a queue of a known name exists and has consumers. Endpoint ids and
task-group ids are seen by other parties (shared endpoints, the endpoint that runs a group's
tasks), so names built from them alone would tell another tenant when an endpoint is online
or a group is in use. Each name carries 128 bits derived under the broker's key instead, and
is told only to the party that reads the queue. The key lives in the database, so every
replica names queues alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy.exc import IntegrityError

from fnrelay_broker.db import Database
from fnrelay_broker.models import BrokerSecret

SECRET_NAME = "queue-names"


#: RabbitMQ queue types (x-queue-type) of the durable queues the broker declares: classic
#: on one node; quorum on a cluster (replicated: a queue survives the loss of its node).
CLASSIC, QUORUM = "classic", "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)


class QueueNames:
    """The names of the endpoint, control and group queues under one key, and the type they
    are declared with (every declarer must pass the same arguments, or RabbitMQ answers 406)."""

    def __init__(self, key: bytes, queue_type: str = CLASSIC):
        self._key = key
        self.queue_type = queue_type

    def arguments(self, **extra: Any) -> dict[str, Any] | None:
        """The arguments of a durable queue: `extra` plus its type when not classic (a classic
        queue is declared without one, as before, so existing queues still match)."""
        return queue_arguments(self.queue_type, **extra)

    def _token(self, kind: str, ident: str) -> str:
        mac = hmac.new(self._key, f"{kind}:{ident}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]  # 128 bits

    def endpoint(self, endpoint_id: str) -> str:
        """An endpoint's durable task queue."""
        return f"fnrelay.endpoint.{self._token('endpoint', endpoint_id)}.tasks"

    def control(self, endpoint_id: str) -> str:
        """A multi-user manager's durable control queue."""
        return f"fnrelay.endpoint.{self._token('control', endpoint_id)}.control"

    def group(self, task_group_id: str) -> str:
        """A task group's result queue."""
        return f"fnrelay.group.{self._token('group', task_group_id)}"

    def deployment(self) -> str:
        """The name of this deployment (one database, any number of broker replicas): the
        same for every replica, different for another database, and telling nothing of the
        key (fnrelay_broker.vhost claims a RabbitMQ vhost with it)."""
        return f"fnrelay.deployment.{self._token('deployment', '')}"

    def gc_prefix(self, user_id: str) -> str:
        """What the official Globus Compute Executor puts before a task group id to name the
        group's result queue (it consumes `prefix + id`): one prefix per user, which only
        that user is told, so the queues of another user's groups cannot be named."""
        return f"fnrelay.gc.{self._token('gc', user_id)}."


def queue_arguments(queue_type: str, **extra: Any) -> dict[str, Any] | None:
    """`extra` plus x-queue-type unless classic; None when there are none."""
    args = dict(extra)
    if queue_type != CLASSIC:
        args["x-queue-type"] = queue_type
    return args or None


def legacy_endpoint_queue(endpoint_id: str) -> str:
    """The guessable name endpoint queues had before: tasks left in one are moved."""
    return f"fnrelay.endpoint.{endpoint_id}.tasks"


def shared_key(db: Database, name: str) -> bytes:
    """The broker secret `name`, 32 random bytes made on first use; every replica of the
    database reads the same one."""
    with db.read() as s:
        row = s.get(BrokerSecret, name)
        if row is not None:
            return bytes.fromhex(row.value)
    try:
        with db.write() as s:
            s.add(BrokerSecret(name=name, value=secrets.token_hex(32)))
    except IntegrityError:  # another replica made it first: use theirs
        pass
    with db.read() as s:
        row = s.get(BrokerSecret, name)
        assert row is not None
        return bytes.fromhex(row.value)


def load(db: Database, queue_type: str = CLASSIC) -> QueueNames:
    """The queue names of this broker's database (the key is made on first use)."""
    return QueueNames(shared_key(db, SECRET_NAME), queue_type)
