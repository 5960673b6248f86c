"""The REST API (FastAPI), all under /v1; see docs/protocol.md."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from pydantic import BaseModel, Field

from fnrelay import wire
from fnrelay_broker import (
    auth,
    blob_api,
    children,
    dashboard,
    db_errors,
    globus_api,
    manage_api,
    metrics,
    queues,
    registry,
    task_list,
    tasks,
)
from fnrelay_broker.access import AmqpAccess
from fnrelay_broker.accounts import endpoint_user
from fnrelay_broker.amqp import Declarer
from fnrelay_broker.blobs import BlobStore
from fnrelay_broker.cleanup import Cleaner
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError, install_handlers
from fnrelay_broker.figures import BrokerFigures
from fnrelay_broker.limits import PayloadLimit
from fnrelay_broker.models import Endpoint
from fnrelay_broker.queue_probe import QueueProbe
from fnrelay_broker.routing import OutboxPublisher, ResultConsumer
from fnrelay_broker.settings import BrokerSettings
from fnrelay_broker.validation import JsonObject, Text

log = logging.getLogger(__name__)

VERSION = "0.1.0"


# --- request bodies ------------------------------------------------------------------------------
class FunctionIn(BaseModel):
    function: Text
    function_name: Text = ""
    description: Text | None = None


class EndpointIn(BaseModel):
    name: Text
    metadata: JsonObject = Field(default_factory=dict)


class TaskGroupIn(BaseModel):
    task_group_id: uuid.UUID | None = None
    #: The endpoint this group's tasks go to: asks for the direct path (granted or not).
    endpoint_id: uuid.UUID | None = None


class TaskIn(BaseModel):
    function_id: Text
    payload: Text
    resource_specification: JsonObject = Field(default_factory=dict)
    user_endpoint_config: JsonObject = Field(default_factory=dict)
    #: Re-runs after infrastructure failures (worker lost, endpoint killed); None: the
    #: endpoint's default.
    max_retries: int | None = Field(default=None, ge=0, le=wire.MAX_RETRIES_CAP)
    #: The submitter's Python "major.minor" (wire.TaskMessage.python_version).
    python_version: str | None = Field(default=None, pattern=r"^\d{1,2}\.\d{1,3}$")


class SubmitIn(BaseModel):
    endpoint_id: Text
    task_group_id: uuid.UUID | None = None
    tasks: list[TaskIn] = Field(min_length=1)


class BatchStatusIn(BaseModel):
    task_ids: list[Text]


def current_user(request: Request) -> auth.CurrentUser:
    """The user of the request's bearer token, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    user = auth.lookup_token(request.app.state.broker.db, token.strip())
    if user is None:
        raise ApiError(401, "invalid or revoked token")
    return user


def user_token(user: Annotated[auth.CurrentUser, Depends(current_user)]) -> auth.CurrentUser:
    """A user token, or 403: endpoint tokens may only register their endpoint."""
    if user.is_endpoint_token:
        raise ApiError(403, f"this is an endpoint token (endpoint {user.endpoint_id}): it may "
                            "only register its endpoint and read its status; use a user token")
    return user


def endpoint_scope(user: auth.CurrentUser, endpoint_id: str) -> None:
    """403 unless the token may act for `endpoint_id` (user tokens: any of the user's)."""
    if user.endpoint_id is not None and user.endpoint_id != endpoint_id:
        raise ApiError(403, f"this endpoint token is for endpoint {user.endpoint_id}, "
                            f"not {endpoint_id}")


#: Routes for users (submit, read); endpoint tokens get 403.
User = Annotated[auth.CurrentUser, Depends(user_token)]
#: Routes an endpoint token may call too (registration), each checked with endpoint_scope.
AnyToken = Annotated[auth.CurrentUser, Depends(current_user)]


# --- app -----------------------------------------------------------------------------------------
class Broker:
    """What the routes share: settings, database, AMQP helpers and the routing threads."""

    def __init__(self, settings: BrokerSettings, start_threads: bool = True):
        self.settings = settings
        self.db = Database(settings.db_url)
        self.db.create_tables()
        self.names = queues.load(self.db, settings.queue_type)
        self.declarer = Declarer(settings.amqp_url, settings.group_queue_expires, self.names)
        self.access = AmqpAccess(settings, self.names)
        self.publisher = OutboxPublisher(self.db, settings.amqp_url, self.names, self.access)
        self.consumer = ResultConsumer(self.db, settings.amqp_url,
                                       verify_senders=self.access.isolated,
                                       queue_type=settings.queue_type)
        self.blobs = BlobStore.open(self.db, settings.blob_store, settings.blob_limit)
        self.cleaner = Cleaner(self.db, settings.result_ttl, self.blobs, self.access.reclaimer(
            self.db, settings.account_idle))
        self.start_threads = start_threads

    def start(self) -> None:
        self.access.apply_policies()
        if self.start_threads:
            self.publisher.start()
            self.consumer.start()
            self.cleaner.start()

    def direct_allowed(self, user: auth.CurrentUser, endpoint_id: str) -> bool:
        """May this user's Executor use the direct path to `endpoint_id`? Only to a plain
        endpoint the user owns (shared and multi-user endpoints need the broker's checks and
        routing first), and only where RabbitMQ vouches for every sender (own accounts)."""
        if not (self.settings.direct and self.access.isolated):
            return False
        with self.db.read() as s:
            ep = s.get(Endpoint, endpoint_id)
            return ep is not None and ep.owner == user.id and children.plain(ep.metadata_)

    def stop(self) -> None:
        if self.start_threads:
            self.publisher.stop()
            self.consumer.stop()
            self.cleaner.stop()
        self.db.dispose()


def create_app(settings: BrokerSettings, start_threads: bool = True) -> FastAPI:
    """The broker's ASGI app; the publisher and consumer threads run during its lifespan."""
    broker = Broker(settings, start_threads=start_threads)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        broker.start()
        try:
            yield
        finally:
            broker.stop()

    app = FastAPI(title="fnrelay broker", version=VERSION, lifespan=lifespan)
    app.state.broker = broker
    install_handlers(app)
    db_errors.install(app, settings.db_url)
    app.add_middleware(PayloadLimit, limit=settings.payload_limit, exempt=blob_api.is_upload)
    _routes(app, broker)
    blob_api.install(app, broker.db, broker.blobs, current_user, user_token, endpoint_scope)
    manage_api.install(app, broker, User)
    globus_api.install(app, broker, user_token)
    probe = QueueProbe(settings.amqp_url, settings.metrics_queue_probes,
                       settings.metrics_queue_cache)
    metrics.install(app, metrics.registry_with(BrokerFigures(
        broker.db, broker.names, settings.offline_after, probe)))
    dashboard.install(app, broker)
    return app


def _routes(app: FastAPI, broker: Broker) -> None:
    s = broker.settings
    db = broker.db
    #: Told to endpoints: whether (and up to what size) results may come as blobs.
    blobs_offer = broker.blobs.advertised() if broker.blobs else None

    @app.get("/v1/version")
    def version() -> dict:
        return {"version": VERSION, "protocol": wire.PROTOCOL_VERSION}

    @app.get("/v1/whoami")
    def whoami(user: AnyToken) -> dict:
        answer = {"user_id": user.id, "username": user.username}
        if user.endpoint_id:
            answer["endpoint_id"] = user.endpoint_id
        return answer

    @app.post("/v1/functions")
    def register_function(body: FunctionIn, user: User) -> dict:
        fid = registry.register_function(
            db, user, body.function, body.function_name, body.description
        )
        return {"function_id": fid}

    @app.get("/v1/functions/{function_id}")
    def get_function(function_id: Text, user: User) -> dict:
        return registry.get_function(db, user, function_id)

    def _registration(eid: str, name: str, multi_user: bool) -> dict:
        """What an endpoint needs to run: its queue names and its AMQP account."""
        _declare_endpoint_queues(eid, multi_user)
        answer = {
            "endpoint_id": eid,
            "name": name,
            "amqp_url": broker.access.endpoint_url(eid, multi_user),
            "task_queue": broker.names.endpoint(eid),
            "tasks_exchange": wire.TASKS_EXCHANGE,
            "results_exchange": wire.RESULTS_EXCHANGE,
            "heartbeat_period": s.heartbeat_period,
            "broker_user": broker.access.broker_user,
            "result_blobs": blobs_offer,
            "forwarded_routing_key": eid + wire.FORWARDED_SUFFIX,
        }
        if multi_user:
            answer["control_queue"] = broker.names.control(eid)
        return answer

    @app.post("/v1/endpoints")
    def create_endpoint(body: EndpointIn, user: User) -> dict:
        """A new endpoint, with an id the broker picks; PUT updates it from then on."""
        eid = registry.create_endpoint(db, user, body.name, body.metadata,
                                       max_endpoints=s.max_endpoints_per_user)
        return _registration(eid, body.name, bool(body.metadata.get("multi_user")))

    @app.put("/v1/endpoints/{endpoint_id}")
    def register_endpoint(endpoint_id: uuid.UUID, body: EndpointIn, user: AnyToken) -> dict:
        eid = str(endpoint_id)
        endpoint_scope(user, eid)
        metadata = registry.update_endpoint(db, user, eid, body.name, body.metadata)
        return _registration(eid, body.name, bool(metadata.get("multi_user")))

    def _declare_endpoint_queues(eid: str, multi_user: bool = False) -> None:
        """Endpoints with their own accounts cannot declare: then a failure here is a 503."""
        ok = broker.declarer.endpoint_queue(eid)
        if ok and multi_user:
            ok = broker.declarer.control_queue(eid)
        if not ok:
            if broker.access.isolated:
                raise ApiError(503, f"cannot declare the queues of endpoint {eid} (RabbitMQ "
                                    "unreachable); retry later")
            log.warning("endpoint %s registered but its queue is not declared yet", eid)

    @app.post("/v1/endpoints/{endpoint_id}/children/{child_id}/credentials")
    def child_credentials(endpoint_id: uuid.UUID, child_id: uuid.UUID, user: AnyToken) -> dict:
        mid, cid = str(endpoint_id), str(child_id)
        endpoint_scope(user, mid)
        children.hand_out(db, user, mid, cid)
        _declare_endpoint_queues(cid)
        return {
            "endpoint_id": cid,
            "amqp_url": broker.access.endpoint_url(cid),
            "task_queue": broker.names.endpoint(cid),
            "broker_user": broker.access.broker_user,
            "forwarded_routing_key": cid + wire.FORWARDED_SUFFIX,
        }

    @app.get("/v1/endpoints")
    def list_endpoints(user: User) -> dict:
        return {"endpoints": registry.list_endpoints(db, user, s.offline_after)}

    @app.get("/v1/endpoints/{endpoint_id}/status")
    def endpoint_status(endpoint_id: Text, user: AnyToken) -> dict:
        endpoint_scope(user, endpoint_id)  # `fnrelay-endpoint status` with an endpoint token
        return registry.get_endpoint_status(db, user, endpoint_id, s.offline_after)

    @app.delete("/v1/endpoints/{endpoint_id}")
    def delete_endpoint(endpoint_id: Text, user: User) -> dict:
        manage_api.delete_endpoint(broker, user, endpoint_id)
        return {"endpoint_id": endpoint_id, "deleted": True}

    @app.post("/v1/task_groups")
    def create_task_group(user: User, body: TaskGroupIn | None = None) -> dict:
        wanted = str(body.task_group_id) if body and body.task_group_id else None
        eid = str(body.endpoint_id) if body and body.endpoint_id else None
        direct = eid if eid and broker.direct_allowed(user, eid) else None
        gid = registry.create_task_group(db, user, wanted, direct)
        if not broker.declarer.group_queue(gid, direct):
            log.warning("task group %s created but its queue is not declared", gid)
        answer: dict[str, Any] = {
            "task_group_id": gid, "amqp_url": broker.access.group_url(gid, direct),
            "queue": broker.names.group(gid), "submit": None}
        if broker.access.isolated:  # who may put results in the queue (RabbitMQ-validated)
            answer["result_senders"] = [broker.access.broker_user]
        if direct:  # the Executor holds its tasks to the payload limit as REST would
            answer["submit"] = {"exchange": wire.SUBMIT_EXCHANGE, "routing_key": direct,
                                "payload_limit": s.payload_limit}
            answer["result_senders"].append(endpoint_user(direct))
        return answer

    @app.get("/v1/task_groups/{task_group_id}")
    def get_task_group(task_group_id: Text, user: User) -> dict:
        return registry.get_task_group(db, user, task_group_id)

    @app.post("/v1/submit")
    def submit(
        body: SubmitIn,
        user: User,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1,
                                               max_length=200)],
    ) -> dict:
        answer = tasks.submit(
            db, user, idempotency_key, body.endpoint_id,
            str(body.task_group_id) if body.task_group_id else None,
            [t.model_dump() for t in body.tasks], handoff=broker.publisher.handoff,
            max_queued=s.max_queued_per_user, max_endpoints=s.max_endpoints_per_user,
        )
        broker.publisher.wake()
        return answer

    @app.get("/v1/tasks")
    def list_tasks(
        user: User,
        status: Annotated[list[Text] | None, Query()] = None,
        endpoint_id: Text | None = None,
        function_id: Text | None = None,
        since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        until: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: int = task_list.DEFAULT_LIMIT,
        after: Text | None = None,
    ) -> dict:
        return task_list.list_tasks(db, user, task_list.TaskFilter(
            status, endpoint_id, function_id, since, until, limit, after))

    @app.get("/v1/tasks/{task_id}")
    def get_task(task_id: Text, user: User) -> dict:
        return tasks.task_record(db, user, task_id)

    @app.post("/v1/tasks/batch_status")
    def batch_status(body: BatchStatusIn, user: User) -> dict:
        found = tasks.task_records(db, user, body.task_ids)
        return {"tasks": found, "unknown": [i for i in body.task_ids if i not in found]}

    @app.post("/v1/tasks/{task_id}/cancel")
    def cancel(task_id: Text, user: User) -> dict:
        answer = tasks.cancel(db, user, task_id)
        broker.publisher.wake()
        return answer
