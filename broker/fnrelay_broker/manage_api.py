"""The /v1 routes that look after registered things beyond submitting to them: an
endpoint's metadata and allowlist, stopping an endpoint, deleting a function (the Client
methods get_endpoint_metadata, get_allowed_functions, stop_endpoint, delete_function).

Each acts on the caller's own endpoint or function only: another user's is 404, exactly
like an unknown id, and endpoint tokens are refused (403) as on every user route.
"""

# No `from __future__ import annotations`: FastAPI reads each route's annotations, and
# `user_dep` is a parameter of install(), not a name it could find in this module.
import uuid
from typing import Any

from fastapi import FastAPI

from fnrelay_broker import registry
from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.errors import ApiError


def install(app: FastAPI, broker: Any, user_dep: Any) -> None:
    """Add the routes; `user_dep` is the API's user-token dependency (app.User)."""
    db = broker.db

    @app.get("/v1/endpoints/{endpoint_id}")
    def endpoint_metadata(endpoint_id: uuid.UUID, user: user_dep) -> dict:
        return registry.get_endpoint(db, user, str(endpoint_id),
                                     broker.settings.offline_after)

    @app.get("/v1/endpoints/{endpoint_id}/allowed_functions")
    def allowed_functions(endpoint_id: uuid.UUID, user: user_dep) -> dict:
        return registry.allowed_functions(db, user, str(endpoint_id))

    @app.post("/v1/endpoints/{endpoint_id}/stop")
    def stop_endpoint(endpoint_id: uuid.UUID, user: user_dep) -> dict:
        eid = str(endpoint_id)
        until = stop(broker, user, eid)
        return {"endpoint_id": eid, "stopped": True, "registration_refused_until": until}

    @app.delete("/v1/functions/{function_id}")
    def delete_function(function_id: uuid.UUID, user: user_dep) -> dict:
        fid = str(function_id)
        registry.delete_function(db, user, fid)
        return {"function_id": fid, "deleted": True}


def stop(broker: Any, user: CurrentUser, endpoint_id: str) -> float:
    """Stop the user's endpoint (also Globus Compute's lock_endpoint): its registration is
    refused until the returned time and its AMQP connections are closed, so its agent exits."""
    if not broker.access.isolated:
        registry.get_endpoint(broker.db, user, endpoint_id, 0.0)  # 404 first if not yours
        raise ApiError(409, "this broker runs without an AMQP account per endpoint, so it "
                            "cannot close one endpoint's connections: stop it where it "
                            "runs (`fnrelay-endpoint stop NAME`)")
    until = registry.stop_endpoint(broker.db, user, endpoint_id)
    broker.access.forget_endpoint(endpoint_id)  # closes its connections; it re-registers, refused
    return until


def delete_endpoint(broker: Any, user: CurrentUser, endpoint_id: str) -> None:
    """Delete the user's endpoint (with a manager's children): its unfinished tasks fail, its
    queues, AMQP accounts and the direct-path grants that named it go."""
    removed, grants = registry.delete_endpoint(broker.db, user, endpoint_id)
    for eid in removed:
        broker.declarer.delete_endpoint_queue(eid)
        broker.access.forget_endpoint(eid)
    for gid, eid in grants:  # groups granted the direct path to one of them
        broker.declarer.revoke_group_grant(gid, eid)
        broker.access.forget_group(gid)  # closes its connections; it re-attaches ungranted
    broker.publisher.wake()
