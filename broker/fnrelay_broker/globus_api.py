"""Globus Compute's /v2 and /v3 routes and Globus Auth's token routes, for the official
globus-compute-sdk (docs/globus-compute.md).

With `GLOBUS_SDK_ENVIRONMENT=local` the official SDK talks to http://localhost:5000 (a broker
there, or `fnrelay gc-proxy`). Every route here is a thin translation (fnrelay.wire.globus)
over the /v1 code paths (registry, tasks, access): ownership, sharing and tenant isolation
are theirs, unchanged. Tasks submitted here are recorded in Globus Compute's format; their
results go to the submitter's Globus Compute group queues as messagepack Results.

Errors keep the broker's JSON shape (`code`, `message`, `http_status`), which globus-sdk
parses into a GlobusAPIError; the token route answers as an OAuth2 server does.

Routes that read a body are `async` (the body is awaited); their database and RabbitMQ work is
synchronous, so it runs in the threadpool, as FastAPI runs plain `def` routes: on the event
loop it would stall every other request of this worker while it waits.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, and `User`
# (made in `install` from the app's own dependency) is local, not a module global.
import base64
import binascii
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, unquote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fnrelay import wire
from fnrelay.wire import globus
from fnrelay_broker import auth, gc_endpoints, manage_api, registry, sharing, tasks
from fnrelay_broker.errors import ApiError
from fnrelay_broker.validation import check_tree

if TYPE_CHECKING:
    from fnrelay_broker.app import Broker

#: The oldest official SDK and endpoint this service answers (globus-compute-sdk checks it).
MIN_SDK_VERSION = "2.0.0"
MIN_EP_VERSION = "2.0.0"
#: What the official SDK's token storage files the access token under.
RESOURCE_SERVER = "funcx_service"
AUTH_RESOURCE_SERVER = "auth.globus.org"
_AUTH_SCOPES = frozenset({"openid", "profile", "email"})
_AUTH_SCOPE_PREFIX = "urn:globus:auth:scope:auth.globus.org:"
#: Seconds the SDK keeps a token before asking again (fnrelay tokens live until revoked).
TOKEN_LIFETIME = 48 * 3600


def _wire_error(e: wire.WireError) -> ApiError:
    return ApiError(400, str(e))


async def _json(request: Request) -> Any:
    """The request's JSON body; 400 (not a 500) when it is not JSON."""
    try:
        return await request.json()
    except ValueError as e:
        raise ApiError(400, f"the body is not JSON: {e}") from None


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, f"{what} must be a UUID, not {value[:80]!r}") from None


def install(app: FastAPI, broker: "Broker",
            user_token: Callable[..., auth.CurrentUser]) -> None:
    """Mount the routes on the broker's app (`user_token`: its dependency for user tokens)."""
    User = Annotated[auth.CurrentUser, Depends(user_token)]
    db, s = broker.db, broker.settings

    @app.get("/v2/version")
    def version(service: str | None = None) -> Any:
        from fnrelay_broker.app import VERSION

        if service is None:
            return VERSION
        return {"api": VERSION, "min_sdk_version": MIN_SDK_VERSION,
                "min_ep_version": MIN_EP_VERSION, "service": "fnrelay"}

    @app.post("/v2/oauth2/token")
    async def token(request: Request) -> JSONResponse:
        raw = await request.body()
        return await run_in_threadpool(_token_answer, broker, request, raw)

    @app.get("/v2/oauth2/userinfo")
    def userinfo(user: User) -> dict:
        return {"sub": user.id, "preferred_username": user.username, "name": user.username,
                "identity_set": [gc_endpoints.auth_identity(user.id, user.username)]}

    async def register_function(request: Request, user: auth.CurrentUser) -> dict:
        try:
            name, code, description = globus.function_code(await _json(request))
        except wire.WireError as e:
            raise _wire_error(e) from None
        fid = await run_in_threadpool(registry.register_function, db, user, code, name,
                                      description, format=wire.FORMAT_GLOBUS)
        return {"function_uuid": fid}

    @app.post("/v2/functions")
    async def register_function_v2(request: Request, user: User) -> dict:
        return await register_function(request, user)

    @app.post("/v3/functions")
    async def register_function_v3(request: Request, user: User) -> dict:
        return await register_function(request, user)

    @app.get("/v2/functions/{function_id}")
    def get_function(function_id: str, user: User) -> dict:
        fn = registry.get_function(db, user, _uuid(function_id, "function_id"))
        return {"function_uuid": fn["function_id"], "function_name": fn["function_name"],
                "description": fn["description"]}

    @app.post("/v3/endpoints/{endpoint_id}/submit")
    async def submit(endpoint_id: str, request: Request, user: User) -> dict:
        eid = _uuid(endpoint_id, "endpoint_id")
        body = await _json(request)
        return await run_in_threadpool(submit_body, eid, body, user)

    def submit_body(eid: str, body: Any, user: auth.CurrentUser) -> dict:
        try:
            entries = globus.submit_entries(body)
            wanted = body.get("task_group_id")
            group_id = None if wanted is None else _uuid(str(wanted), "task_group_id")
        except wire.WireError as e:
            raise _wire_error(e) from None
        group_id = _group(broker, user, group_id, bool(body.get("create_queue")))
        answer = tasks.submit(db, user, f"globus-compute:{uuid.uuid4()}", eid, group_id,
                              entries, handoff=broker.publisher.handoff,
                              max_queued=s.max_queued_per_user,
                              max_endpoints=s.max_endpoints_per_user)
        broker.publisher.wake()
        return globus.submit_answer(entries, answer["task_ids"], answer["task_group_id"],
                                    eid, str(uuid.uuid4()))

    @app.post("/v2/submit")
    def submit_v2(user: User) -> dict:
        raise ApiError(400, "use POST /v3/endpoints/{endpoint_id}/submit (globus-compute-sdk "
                            ">= 2.30 does); this service has no /v2/submit")

    @app.get("/v2/tasks/{task_id}")
    def get_task(task_id: str, user: User) -> dict:
        return globus.task_record(_gc_record(tasks.task_record(db, user, task_id)))

    @app.post("/v2/batch_status")
    async def batch_status(request: Request, user: User) -> dict:
        body = await _json(request)
        ids = body.get("task_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "'task_ids' must be a list of task ids")
        found = await run_in_threadpool(tasks.task_records, db, user, ids)
        return {"response": "batch", "results": {
            tid: globus.task_record(rec) for tid, rec in found.items()
            if rec.get("format") == wire.FORMAT_GLOBUS}}

    @app.get("/v2/taskgroup/{task_group_id}")
    def get_task_group(task_group_id: str, user: User) -> dict:
        gid = _uuid(task_group_id, "task_group_id")
        group = registry.get_task_group(db, user, gid)
        _declare_gc_queue(broker, user, gid)  # an Executor re-attaching consumes it next
        return {"taskgroup_id": gid, "tasks": [{"id": t} for t in group["task_ids"]]}

    @app.get("/v2/get_amqp_result_connection_url")
    def amqp_url(user: User) -> dict:
        return {"connection_url": broker.access.gc_url(user.id),
                "queue_prefix": broker.names.gc_prefix(user.id)}

    @app.get("/v2/endpoints")
    def list_endpoints(user: User) -> list:
        return [{"uuid": e["endpoint_id"], "name": e["name"], "display_name": e["name"],
                 "owner": user.id, "status": e["status"]}
                for e in registry.list_endpoints(db, user, s.offline_after)]

    @app.get("/v2/endpoints/{endpoint_id}")
    def endpoint_metadata(endpoint_id: str, user: User) -> dict:
        eid = _uuid(endpoint_id, "endpoint_id")
        status = registry.get_endpoint_status(db, user, eid, s.offline_after)
        name = next((e["name"] for e in registry.list_endpoints(db, user, s.offline_after)
                     if e["endpoint_id"] == eid), "")
        allowed = registry.allowed_functions(db, user, eid)["functions"]
        return {"uuid": eid, "name": name, "display_name": name, "owner": user.id,
                "status": status["status"], "multi_user": False, "public": False,
                "allowed_functions": allowed}

    @app.get("/v2/endpoints/{endpoint_id}/status")
    def endpoint_status(endpoint_id: str, user: User) -> dict:
        status = registry.get_endpoint_status(db, user, _uuid(endpoint_id, "endpoint_id"),
                                              s.offline_after)
        return {"status": status["status"],
                "details": {**status["details"], "last_heartbeat": status["last_heartbeat"]}}

    @app.get("/v3/endpoints/{endpoint_id}/allowed_functions")
    def allowed_functions(endpoint_id: str, user: User) -> dict:
        return registry.allowed_functions(db, user, _uuid(endpoint_id, "endpoint_id"))

    def lock_endpoint(endpoint_id: str, user: User) -> dict:
        eid = _uuid(endpoint_id, "endpoint_id")
        until = manage_api.stop(broker, user, eid)
        stamp = datetime.fromtimestamp(until, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return {"endpoint_id": eid, "lock_expiration_timestamp": stamp}

    for path in ("/v2/endpoints/{endpoint_id}/lock", "/v3/endpoints/{endpoint_id}/lock"):
        app.add_api_route(path, lock_endpoint, methods=["POST"])

    @app.delete("/v2/endpoints/{endpoint_id}")
    def delete_endpoint(endpoint_id: str, user: User) -> dict:
        manage_api.delete_endpoint(broker, user, _uuid(endpoint_id, "endpoint_id"))
        return {"result": 302}  # Globus Compute's answer

    @app.delete("/v2/functions/{function_id}")
    def delete_function(function_id: str, user: User) -> dict:
        registry.delete_function(db, user, _uuid(function_id, "function_id"))
        return {"result": 302}  # Globus Compute's answer

    async def register_gc_endpoint(request: Request, user: auth.CurrentUser,
                                   endpoint_id: str | None) -> dict:
        try:
            body = check_tree(await _json(request))  # text the database takes, finite numbers
            name, multi_user, meta, allowed = globus.endpoint_registration(body)
        except ValueError as e:  # WireError too
            raise ApiError(400, str(e)) from None
        return await run_in_threadpool(save_gc_endpoint, user, endpoint_id, name, multi_user,
                                       meta, allowed)

    def save_gc_endpoint(user: auth.CurrentUser, endpoint_id: str | None, name: str,
                         multi_user: bool, meta: dict[str, Any], allowed: list[str] | None
                         ) -> dict:
        metadata: dict[str, Any] = {"multi_user": True, "globus_compute": meta}
        if allowed:
            metadata[sharing.KEY] = allowed
        keys = {gc_endpoints.KEY: {"multi_user": multi_user}}
        if endpoint_id is None:
            endpoint_id = registry.create_endpoint(db, user, name, metadata, keys,
                                                   s.max_endpoints_per_user)
        else:
            registry.update_endpoint(db, user, endpoint_id, name, metadata, keys)
        if not (broker.declarer.endpoint_queue(endpoint_id)
                and broker.declarer.control_queue(endpoint_id)):
            raise ApiError(503, f"cannot declare the queues of endpoint {endpoint_id} "
                                "(RabbitMQ unreachable); retry later")
        return gc_endpoints.registration(broker.access, broker.names, endpoint_id)

    @app.post("/v3/endpoints")
    async def create_gc_endpoint(request: Request, user: User) -> dict:
        return await register_gc_endpoint(request, user, None)

    @app.put("/v3/endpoints/{endpoint_id}")
    async def update_gc_endpoint(endpoint_id: str, request: Request, user: User) -> dict:
        return await register_gc_endpoint(request, user, _uuid(endpoint_id, "endpoint_id"))

    @app.post("/v2/endpoints")
    def register_v2(user: User) -> None:
        raise ApiError(400, "use POST /v3/endpoints (globus-compute-endpoint >= 2.30 does); "
                            "this service has no /v2 endpoint registration")


def _gc_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A record the official SDK can read: tasks submitted through /v1 hold fnrelay's format,
    which its deserializer would misread (the tags collide)."""
    if rec.get("format") != wire.FORMAT_GLOBUS:
        raise ApiError(409, f"task {rec['task_id']} was submitted through fnrelay's API in "
                            "its format: read it with fnrelay's Client")
    return rec


def _group(broker: "Broker", user: auth.CurrentUser, group_id: str | None,
           create_queue: bool) -> str:
    """The submit's task group, made now when new, with its Globus Compute queue declared
    before any task goes out (a result forwarded before it exists would be lost)."""
    with broker.db.write() as session:
        gid = registry.ensure_task_group(session, user, group_id)
    if create_queue:
        _declare_gc_queue(broker, user, gid)
    return gid


def _declare_gc_queue(broker: "Broker", user: auth.CurrentUser, gid: str) -> None:
    if not broker.declarer.gc_group_queue(broker.names.gc_prefix(user.id) + gid, gid):
        raise ApiError(503, f"cannot declare the result queue of task group {gid} (RabbitMQ "
                            "unreachable); retry later")


def _token_answer(broker: "Broker", request: Request, raw: bytes) -> JSONResponse:
    """Globus Auth's client-credentials grant: client id = a fnrelay user id (or name),
    client secret = one of that user's tokens; the answer's one token is that token."""
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    client_id, secret = _client_credentials(request, form)
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type",
                            "only the client_credentials grant is supported")
    user = auth.lookup_token(broker.db, secret) if secret else None
    if user is None or user.is_endpoint_token or client_id not in (user.id, user.username):
        return _oauth_error(401, "invalid_client", "client id and secret must be a fnrelay "
                            "user (id or name) and one of that user's tokens")
    scope = form.get("scope") or ""
    servers = _resource_servers(scope)
    tokens = [{"access_token": secret, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
               "resource_server": rs, "scope": scope} for rs in servers]
    return JSONResponse({**tokens[0], "other_tokens": tokens[1:]})


def _resource_servers(scope: str) -> list[str]:
    """Whose scopes a token request names: Globus Auth's own (the official endpoint's
    `userinfo`), Compute's, or both. One token serves all here, but globus-sdk's authorizers
    expect exactly the resource servers they asked for."""
    names = scope.split()
    auth_scopes = [n for n in names if n in _AUTH_SCOPES or n.startswith(_AUTH_SCOPE_PREFIX)]
    servers = [] if names and len(auth_scopes) == len(names) else [RESOURCE_SERVER]
    return servers + ([AUTH_RESOURCE_SERVER] if auth_scopes else [])


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """(client id, secret) from HTTP Basic auth or, failing that, the form."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            cid, _, secret = base64.b64decode(value).decode().partition(":")
            return unquote(cid), unquote(secret)
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
    return form.get("client_id", ""), form.get("client_secret", "")


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description,
                         "code": error.upper(), "message": description,
                         "http_status": status}, status_code=status)
