"""Functions, endpoints and task groups: what a user registers before submitting."""

from __future__ import annotations

import functools
import hashlib
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fnrelay.wire import FORMAT_FNRELAY, TERMINAL_VALUES, ExceptionInfo, TaskState, now
from fnrelay_broker import endpoint_cap, gc_endpoints, sharing
from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError, not_found
from fnrelay_broker.models import (
    DeletedEndpoint,
    Endpoint,
    Function,
    Outbox,
    Task,
    TaskGroup,
    TaskHistory,
)

#: Namespace of function ids: uuid5(FUNCTION_NAMESPACE, f"{user_id}:{sha256(body)}").
FUNCTION_NAMESPACE = uuid.UUID("f43e4ae4-f150-48d4-80d4-754d8775a44b")


def function_id_for(user_id: str, body: str) -> tuple[str, str]:
    digest = code_digest(body)
    return function_id_of(user_id, digest), digest


def code_digest(body: str) -> str:
    """SHA-256 (hex) of a function's serialized code."""
    return hashlib.sha256(body.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)  # the ledger checks every direct-path task's function
def function_id_of(user_id: str, digest: str) -> str:
    """The id of `user_id`'s function whose code has SHA-256 `digest` (hex)."""
    return str(uuid.uuid5(FUNCTION_NAMESPACE, f"{user_id}:{digest}"))


def register_function(
    db: Database, user: CurrentUser, body: str, name: str, description: str | None,
    format: str = FORMAT_FNRELAY,
) -> str:
    """Store a function once per (user, code, format); the same code always gets the same id.
    Another format's code gets another id (its digest is taken over the format too): one text
    may mean different functions to fnrelay's and Globus Compute's deserializers."""
    fid, digest = function_id_for(user.id, body)
    if format != FORMAT_FNRELAY:
        fid = function_id_of(user.id, code_digest(f"{format}:{body}"))
    try:
        with db.write() as s:
            if s.get(Function, fid) is None:
                s.add(
                    Function(
                        id=fid, owner=user.id, name=name, description=description,
                        body=body, sha256=digest, created=now(), format=format,
                    )
                )
    except IntegrityError:  # a concurrent identical registration won: same id, same code
        pass
    return fid


def get_function(db: Database, user: CurrentUser, function_id: str) -> dict[str, Any]:
    with db.read() as s:
        fn = s.get(Function, function_id)
        if fn is None or fn.owner != user.id:
            raise not_found("function", function_id)
        return {
            "function_id": fn.id,
            "function_name": fn.name,
            "description": fn.description,
            "created": fn.created,
        }


#: Metadata keys that are the owner's policy, not the endpoint process's description: an
#: endpoint token (what a site's endpoint runs with) may not change them.
POLICY_KEYS = (sharing.KEY, "multi_user")
#: Metadata key of a stopped endpoint: until this unix time its registration is refused.
STOPPED_UNTIL = "stopped_until"
#: How long Client.stop_endpoint blocks an endpoint's registration (GC: "temporarily"): long
#: enough for its agent, reconnecting at once, to be refused and exit.
STOP_SECONDS = 120.0
#: Metadata keys only the broker writes (a multi-user child's record, a stop): a client
#: setting them would make its endpoint another manager's child, or someone's endpoint its
#: own child, or lift a stop.
BROKER_KEYS = ("parent", "user_endpoint_config", STOPPED_UNTIL, gc_endpoints.KEY)


def _check_client_metadata(metadata: dict[str, Any]) -> None:
    """422 for keys only the broker sets; the sharing list's shape."""
    sharing.validate(metadata)
    taken = [k for k in BROKER_KEYS if k in metadata]
    if taken:
        raise ApiError(422, f"metadata.{taken[0]} is set by the broker alone (for the child "
                            "endpoints of multi-user endpoints)")


def create_endpoint(db: Database, user: CurrentUser, name: str,
                    metadata: dict[str, Any], broker_keys: dict[str, Any] | None = None,
                    max_endpoints: int = 0) -> str:
    """A new endpoint of `user` with an id the broker picks (uuid4); 403 if the user has
    `max_endpoints` already (endpoint_cap.py).

    Ids are never chosen by clients: an id someone else can compute or has seen (a
    multi-user child, a deleted endpoint, a shared one) can then never be claimed by them.
    """
    _check_client_metadata(metadata)
    endpoint_id = str(uuid.uuid4())
    with db.write() as s:
        endpoint_cap.check(s, user.id, max_endpoints)
        s.add(Endpoint(id=endpoint_id, owner=user.id, name=name,
                       metadata_={**metadata, **(broker_keys or {})},
                       state="registered", created=now()))
    return endpoint_id


def update_endpoint(db: Database, user: CurrentUser, endpoint_id: str, name: str,
                    metadata: dict[str, Any], broker_keys: dict[str, Any] | None = None,
                    ) -> dict[str, Any]:
    """Update the user's endpoint; returns its metadata now. 404 alike for an unknown id and
    another user's (the answer tells nothing about ids that are not yours); a child of a
    multi-user endpoint is the broker's record, not a PUT's. Policy keys the body leaves out
    keep their values (an endpoint restarting does not unshare it); an endpoint token may not
    change them (403). `broker_keys`: BROKER_KEYS the caller (a route) sets; an official
    Globus Compute endpoint and a fnrelay one never take over each other's record (404)."""
    _check_client_metadata(metadata)
    with db.write() as s:
        ep = s.get(Endpoint, endpoint_id)
        if ep is None or ep.owner != user.id or (ep.metadata_ or {}).get("parent"):
            raise not_found("endpoint", endpoint_id)
        stored = ep.metadata_ or {}
        if gc_endpoints.is_gc(stored) != gc_endpoints.is_gc(broker_keys):
            raise not_found("endpoint", endpoint_id)
        until = stored.get(STOPPED_UNTIL)
        if isinstance(until, (int, float)) and now() < until:
            raise ApiError(409, f"endpoint {endpoint_id} was stopped by its owner; it may "
                                f"register again in {until - now():.0f} s")
        if user.is_endpoint_token:
            changed = [k for k in POLICY_KEYS if k in metadata and metadata[k] != stored.get(k)]
            if changed:
                raise ApiError(403, f"an endpoint token may not change {', '.join(changed)} "
                                    f"of endpoint {endpoint_id}: that is its owner's policy "
                                    "(change it with a user token)")
        merged = {**{k: stored[k] for k in POLICY_KEYS if k in stored}, **metadata,
                  **(broker_keys or {})}
        ep.name, ep.metadata_ = name, merged
        return dict(merged)


def endpoint_status(ep: Endpoint, threshold: float) -> str:
    """Online iff a heartbeat arrived within `threshold` seconds and it is not stopping."""
    if ep.last_heartbeat is None or ep.state == "stopping":
        return "offline"
    return "online" if now() - ep.last_heartbeat <= threshold else "offline"


def list_endpoints(db: Database, user: CurrentUser, threshold: float) -> list[dict[str, Any]]:
    with db.read() as s:
        eps = s.scalars(select(Endpoint).where(Endpoint.owner == user.id).order_by(Endpoint.name))
        return [
            {
                "endpoint_id": ep.id,
                "name": ep.name,
                "status": endpoint_status(ep, threshold),
                "last_heartbeat": ep.last_heartbeat,
                "details": dict(ep.details or {}),
            }
            for ep in eps
        ]


def _own_endpoint(s: Session, user: CurrentUser, endpoint_id: str) -> Endpoint:
    """The user's endpoint, or 404 alike for an unknown id and another user's."""
    ep = s.get(Endpoint, endpoint_id)
    if ep is None or ep.owner != user.id:
        raise not_found("endpoint", endpoint_id)
    return ep


def get_endpoint(db: Database, user: CurrentUser, endpoint_id: str,
                 threshold: float) -> dict[str, Any]:
    """The user's endpoint with the metadata it registered (Client.get_endpoint_metadata)."""
    with db.read() as s:
        ep = _own_endpoint(s, user, endpoint_id)
        return {
            "endpoint_id": ep.id,
            "name": ep.name,
            "status": endpoint_status(ep, threshold),
            "last_heartbeat": ep.last_heartbeat,
            "details": dict(ep.details or {}),
            "created": ep.created,
            "metadata": dict(ep.metadata_ or {}),
        }


def allowed_functions(db: Database, user: CurrentUser, endpoint_id: str) -> dict[str, Any]:
    """The allowlist of the user's endpoint: what other users may run on it when shared."""
    with db.read() as s:
        ep = _own_endpoint(s, user, endpoint_id)
        entries = [str(v) for v in (ep.metadata_ or {}).get(sharing.KEY) or []]
        return {"endpoint_id": ep.id, "restricted": bool(entries), "functions": entries}


def stop_endpoint(db: Database, user: CurrentUser, endpoint_id: str) -> float:
    """Refuse the user's endpoint's registration for STOP_SECONDS and mark it stopping;
    returns until when. The caller then closes its AMQP connections: its agent reconnects,
    re-registers, is refused (409) and exits."""
    with db.write() as s:
        ep = _own_endpoint(s, user, endpoint_id)
        until = now() + STOP_SECONDS
        ep.metadata_ = {**(ep.metadata_ or {}), STOPPED_UNTIL: until}
        ep.state = "stopping"
        return until


def delete_function(db: Database, user: CurrentUser, function_id: str) -> None:
    """Delete the user's function; 409 while a task of it is unfinished (its message, sent
    or re-sent later, carries the function's code from this row)."""
    with db.write() as s:
        fn = s.get(Function, function_id)
        if fn is None or fn.owner != user.id:
            raise not_found("function", function_id)
        busy = s.scalar(select(Task.id).where(
            Task.function_id == function_id, Task.owner == user.id,
            Task.status.not_in(TERMINAL_VALUES)).limit(1))
        if busy is not None:
            raise ApiError(409, f"function {function_id} has unfinished tasks (task {busy}); "
                                "delete it once they are done, or cancel them")
        s.delete(fn)


def get_endpoint_status(
    db: Database, user: CurrentUser, endpoint_id: str, threshold: float
) -> dict[str, Any]:
    with db.read() as s:
        ep = s.get(Endpoint, endpoint_id)
        if ep is None or ep.owner != user.id:
            raise not_found("endpoint", endpoint_id)
        return {
            "endpoint_id": ep.id,
            "status": endpoint_status(ep, threshold),
            "last_heartbeat": ep.last_heartbeat,
            "details": dict(ep.details or {}),
        }


def missing_endpoint(s: Session, user: CurrentUser, endpoint_id: str) -> ApiError:
    """The 404 for an endpoint that is not the user's: it says "deleted" to its former owner
    only (to anyone else a deleted id is as unknown as one never used)."""
    gone = s.get(DeletedEndpoint, endpoint_id)
    if gone is not None and gone.owner == user.id:
        return ApiError(404, f"endpoint {endpoint_id} was deleted")
    return not_found("endpoint", endpoint_id)


def delete_endpoint(db: Database, user: CurrentUser, endpoint_id: str
                    ) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove the endpoint and, for a multi-user manager, its child endpoints (they cannot
    run without it); their unfinished tasks fail (and are forwarded). Returns the ids removed
    (their queues and RabbitMQ accounts go next) and the (group, endpoint) grants of the
    direct path that named them (to be revoked)."""
    t = now()
    with db.write() as s:
        ep = s.get(Endpoint, endpoint_id)
        if ep is None or ep.owner != user.id:
            raise not_found("endpoint", endpoint_id)
        removed = [endpoint_id, *s.scalars(
            select(Endpoint.id).where(Endpoint.metadata_["parent"].as_string() == endpoint_id))]
        owners = dict(s.execute(select(Endpoint.id, Endpoint.owner)
                                .where(Endpoint.id.in_(removed))).tuples().all())
        s.execute(delete(Endpoint).where(Endpoint.id.in_(removed)))
        s.add_all([DeletedEndpoint(id=i, owner=owners[i], deleted=t) for i in removed])
        grants = [(str(g), str(e)) for g, e in s.execute(
            select(TaskGroup.id, TaskGroup.direct_endpoint)
            .where(TaskGroup.direct_endpoint.in_(removed)))]
        s.execute(update(TaskGroup).where(TaskGroup.direct_endpoint.in_(removed))
                  .values(direct_endpoint=None))
        ids = list(
            s.scalars(
                select(Task.id).where(
                    Task.endpoint_id.in_(removed), Task.status.not_in(TERMINAL_VALUES)
                )
            )
        )
        exc = ExceptionInfo(
            type="fnrelay.errors.FnRelayError",
            message=f"endpoint {endpoint_id} was deleted before the task finished",
            traceback="",
        ).__dict__
        s.execute(delete(Outbox).where(Outbox.endpoint_id.in_(removed)))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            s.execute(
                update(Task)
                .where(Task.id.in_(chunk))
                .values(status=TaskState.FAILED.value, exception=exc, completed=t)
            )
        if ids:
            s.execute(
                TaskHistory.__table__.insert(),
                [
                    {"task_id": i, "status": "failed", "time": t, "detail": "endpoint deleted"}
                    for i in ids
                ],
            )
            s.execute(
                Outbox.__table__.insert(),
                [{"kind": "result", "endpoint_id": endpoint_id, "task_id": i} for i in ids],
            )
    return removed, grants


def ensure_task_group(s: Session, user: CurrentUser, task_group_id: str | None) -> str:
    """The id of the user's group; a new one (the broker picks its id) when None. 404 alike
    for an unknown id and another user's: a client naming an id only re-attaches, so no one
    claims an id another party has seen (endpoints see the group ids of their tasks)."""
    if task_group_id is None:
        task_group_id = str(uuid.uuid4())
        s.add(TaskGroup(id=task_group_id, owner=user.id, created=now()))
        s.flush()
        return task_group_id
    group = s.get(TaskGroup, task_group_id)
    if group is None or group.owner != user.id:
        raise not_found("task group", task_group_id)
    return task_group_id


def create_task_group(db: Database, user: CurrentUser, task_group_id: str | None,
                      direct_endpoint: str | None = None) -> str:
    """The group an Executor asked for (made when missing), marked handed out now, with the
    endpoint it is granted the direct path to (None: none)."""
    with db.write() as s:
        group_id = ensure_task_group(s, user, task_group_id)
        s.execute(update(TaskGroup).where(TaskGroup.id == group_id)
                  .values(handed_out=now(), direct_endpoint=direct_endpoint))
        return group_id


def get_task_group(db: Database, user: CurrentUser, task_group_id: str) -> dict[str, Any]:
    with db.read() as s:
        group = s.get(TaskGroup, task_group_id)
        if group is None or group.owner != user.id:
            raise not_found("task group", task_group_id)
        ids = s.scalars(
            select(Task.id).where(Task.task_group_id == task_group_id).order_by(Task.seq)
        )
        return {"task_group_id": task_group_id, "task_ids": list(ids)}
