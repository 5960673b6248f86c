"""The official globus-compute-endpoint (4.x) joining a fnrelay broker (docs/globus-compute.md).

A 4.x endpoint is always a manager: it registers (`POST /v3/endpoints`), reads commands from
one queue and publishes heartbeats; tasks flow only once the service sends it a
`cmd_start_endpoint` naming a user endpoint and that child's AMQP credentials. Here it is a
fnrelay multi-user manager like any other: its children are the broker's records (children.py,
owned by the submitting user), its command queue is the manager's control queue, and every
account is the one fnrelay makes per endpoint (accounts.py): a manager reads its control
queue, a child its task queue, and each publishes to `fnrelay.results` with its own id as the
routing key and its own account as `user_id`, which RabbitMQ enforces. Only the message
format differs: GC's JSON commands and messagepack Task, Result and EPStatusReport
(fnrelay.wire.globus), told apart by the AMQP `type` the broker writes into the publish
arguments it hands out.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from fnrelay import wire
from fnrelay.amqp import first_url
from fnrelay.wire import globus
from fnrelay_broker.accounts import endpoint_user
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError
from fnrelay_broker.models import Endpoint

if TYPE_CHECKING:
    from fnrelay_broker.access import AmqpAccess
    from fnrelay_broker.queues import QueueNames

#: Metadata key (set by the broker alone) of an official endpoint's manager and children.
KEY = "globus_compute_endpoint"
#: What the official endpoint's command loop runs (CoreEndpoint.cmd_start_endpoint).
START_COMMAND = "cmd_start_endpoint"
_PERSISTENT = 2


def is_gc(metadata: dict[str, Any] | None) -> bool:
    return bool((metadata or {}).get(KEY))


def open_to_others(metadata: dict[str, Any] | None) -> bool:
    """May users other than its owner submit to this endpoint? Not to an official endpoint
    that registered unprivileged: it starts children for its owner's identity only, and
    would leave anyone else's tasks waiting."""
    gc = (metadata or {}).get(KEY)
    return not isinstance(gc, dict) or bool(gc.get("multi_user"))


def check_formats(entries: list[dict[str, Any]]) -> None:
    """422 unless every task is in Globus Compute's format: an official endpoint runs
    nothing else."""
    if any(e.get("format") != wire.FORMAT_GLOBUS for e in entries):
        raise ApiError(422, "this is an official Globus Compute endpoint: it runs tasks in "
                            "Globus Compute's format only (submit with the official SDK, or "
                            f"with fnrelay's Client(format={wire.FORMAT_GLOBUS!r}))")


def publish_info(access: AmqpAccess, endpoint_id: str, url: str, kind: str) -> dict[str, Any]:
    """Where an official endpoint publishes (its ResultPublisher checks the exchange and
    queue exist, then publishes with `queue_publish_kwargs`): fnrelay's results exchange,
    routing key = its id, and `user_id` = its own account, as every fnrelay endpoint does."""
    props: dict[str, Any] = {"type": kind, "delivery_mode": _PERSISTENT,
                             "content_type": "application/octet-stream"}
    if access.isolated:  # RabbitMQ checks user_id against the connection's account
        props["user_id"] = endpoint_user(endpoint_id)
    return {"connection_url": url, "exchange": wire.RESULTS_EXCHANGE,
            "queue": wire.BROKER_RESULTS_QUEUE,
            "queue_publish_kwargs": {"exchange": wire.RESULTS_EXCHANGE,
                                     "routing_key": endpoint_id, "mandatory": True,
                                     "properties": props}}


def registration(access: AmqpAccess, names: QueueNames, endpoint_id: str) -> dict[str, Any]:
    """The answer to a manager's registration: its command queue (fnrelay's control queue
    of the endpoint) and heartbeat queue, both on the manager's own account (new password)."""
    # The official endpoint takes one URL (behind a cluster: a load balancer's).
    url = first_url(access.endpoint_url(endpoint_id, multi_user=True))
    return {"endpoint_id": endpoint_id,
            "command_queue_info": {"connection_url": url,
                                   "queue": names.control(endpoint_id)},
            "heartbeat_queue_info": publish_info(access, endpoint_id, url,
                                                 globus.MSG_GC_STATUS)}


def child_credentials(access: AmqpAccess, names: QueueNames, child_id: str) -> dict[str, Any]:
    """The `amqp_creds` of a child: its task queue and where its results and heartbeats go,
    on the child's own account (new password: the manager passes them on to a running child,
    which reconnects with them)."""
    url = first_url(access.endpoint_url(child_id))
    return {"endpoint_id": child_id,
            "task_queue_info": {"connection_url": url, "queue": names.endpoint(child_id)},
            "result_queue_info": publish_info(access, child_id, url, globus.MSG_GC_RESULT),
            "heartbeat_queue_info": publish_info(access, child_id, url,
                                                 globus.MSG_GC_STATUS)}


def auth_identity(user_id: str, username: str) -> dict[str, str]:
    """A fnrelay user as one identity of Globus Auth's identity sets: both its id keys (the
    endpoint compares `sub`, GC's identity mapping reads `id`, `status` and the fields its
    expressions name), `username` being the fnrelay user name."""
    return {"sub": user_id, "id": user_id, "username": username, "name": username,
            "status": "used"}


def start_command(manager_id: str, msg: wire.StartChild, creds: dict[str, Any]) -> bytes:
    """A `cmd_start_endpoint` for the child `msg` names. The identity is the fnrelay user's
    (id as `sub`): an unprivileged manager starts children only for its owner's identities
    (its `userinfo`), a privileged one maps it with its identity mapping."""
    identity = auth_identity(msg.user_id, msg.username)
    return json.dumps({
        "command": START_COMMAND, "args": [],
        "kwargs": {"name": f"uep.{manager_id}.{msg.child_id}",
                   "user_opts": msg.user_endpoint_config,
                   # GC renders it as `_GC.user_runtime` (strings JSON-quoted) and sets
                   # GC_USER_PYTHON_VERSION / GC_USER_SDK_VERSION from it.
                   "user_runtime": msg.user_runtime,
                   "amqp_creds": creds},
        "globus_effective_identity": msg.user_id, "globus_identity_set": [identity],
        "globus_username": msg.username,
    }).encode()


def gc_endpoint_ids(db: Database, endpoint_ids: list[str]) -> set[str]:
    """Those of `endpoint_ids` that are official endpoints (managers or children)."""
    with db.read() as s:
        rows = s.execute(select(Endpoint.id, Endpoint.metadata_)
                         .where(Endpoint.id.in_(endpoint_ids))).all()
    return {eid for eid, meta in rows if is_gc(meta)}

