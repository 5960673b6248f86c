"""The REST client of the broker: register functions, submit tasks, read their results.

Built on globus-sdk's BaseClient for the HTTP transport and its retries (network errors, 5xx,
429). Because POSTs are retried too, every submit carries an Idempotency-Key that stays the
same across the retries of that one call, so a retried submit never creates tasks twice.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import globus_sdk
from globus_sdk.transport import RetryCheckResult, RetryConfig, RetryContext

from fnrelay import blobs, errors, gc_serialize, serialize, version_notice, wire
from fnrelay.amqp import ENV_CA_BUNDLE, ca_bundle
from fnrelay.config import resolve_credentials
from fnrelay.hardware import run_hardware_report
from fnrelay.ignored import ignored
from fnrelay.results import outcome
from fnrelay.retry_notice import RetryNotice, silenced
from fnrelay.wire import ExceptionInfo, TaskState, pyversion, runtime

_STATUS_ERRORS: dict[int, type[errors.BrokerError]] = {
    401: errors.AuthenticationError,
    403: errors.AuthenticationError,
    404: errors.NotFoundError,
    413: errors.PayloadTooLargeError,
    429: errors.QuotaExceededError,
    502: errors.BrokerUnavailableError,
    503: errors.BrokerUnavailableError,
    504: errors.BrokerUnavailableError,
}
#: Refusals told apart by the answer's code where the status is shared with others.
_CODE_ERRORS: dict[str, type[errors.BrokerError]] = {
    "TOO_MANY_ENDPOINTS": errors.EndpointLimitError,
}


@contextmanager
def broker_errors(base_url: str) -> Iterator[None]:
    """Turn globus-sdk's exceptions into fnrelay.errors with the broker's own message."""
    try:
        yield
    except globus_sdk.GlobusAPIError as e:
        cls = _CODE_ERRORS.get(str(e.code)) or _STATUS_ERRORS.get(e.http_status,
                                                                   errors.BrokerError)
        message = e.message or e.text or f"HTTP {e.http_status}"
        if cls is errors.QuotaExceededError:
            raise errors.QuotaExceededError(message, e.http_status, e.code,
                                            _retry_after(e.headers)) from None
        raise cls(message, http_status=e.http_status, code=e.code) from None
    except globus_sdk.NetworkError as e:
        if "CERTIFICATE_VERIFY_FAILED" in repr(getattr(e, "underlying_exception", e)):
            raise errors.BrokerUnavailableError(
                f"cannot verify the TLS certificate of the broker at {base_url}: set "
                f"{ENV_CA_BUNDLE} to the PEM file of the CA that signed it") from None
        raise errors.BrokerUnavailableError(
            f"cannot reach the broker at {base_url}: {e}; is it running and is the URL right?"
        ) from None


def _retry_after(headers: Any) -> float:
    """Seconds of a Retry-After header given in seconds (5 when absent or a date)."""
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return 5.0


def _quota_not_retried(ctx: RetryContext) -> RetryCheckResult:
    """The quota's 429 is answered at once: globus-sdk would retry it in silence for half a
    minute, while Client.run's caller should hear the reason and the Executor waits itself."""
    response = ctx.response
    if response is not None and response.status_code == 429:
        try:
            code = response.json().get("code")
        except (ValueError, AttributeError):
            code = None
        if code == "TOO_MANY_QUEUED_TASKS":
            return RetryCheckResult.do_not_retry
    return RetryCheckResult.no_decision


def uuid_text(name: str, value: str | uuid.UUID) -> str:
    """An id given as text or uuid.UUID (Globus Compute takes both) as the text the broker
    expects; ValueError naming `name` for anything that is not a UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{name} must be a UUID, not {value!r}") from None


def json_object(name: str, value: dict[str, Any] | None) -> dict[str, Any]:
    """A resource_specification or user_endpoint_config checked here, where the mistake was
    made: the broker refuses anything but a JSON object of finite numbers (422), and on the
    direct path nothing stands between a malformed one and the endpoint."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict, not {type(value).__name__}")
    _check_json(name, value)
    return value


def _check_json(where: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} must be a string")
            _check_json(f"{where}[{key!r}]", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(f"{where}[{i}]", item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}: only finite numbers can be sent")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise ValueError(f"{where} is a {type(value).__name__}: only JSON values (dict, list, "
                        "str, number, bool, None) can be sent")


@dataclass
class Batch:
    """Tasks to submit together in one request (Client.batch_run)."""

    task_group_id: str | None = None
    resource_specification: dict[str, Any] | None = None
    user_endpoint_config: dict[str, Any] | None = None
    max_retries: int | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    #: The serialization of its tasks (the Client's `format`).
    format: str = wire.FORMAT_FNRELAY

    def __post_init__(self) -> None:
        self.resource_specification = json_object(
            "resource_specification", self.resource_specification)
        self.user_endpoint_config = json_object("user_endpoint_config", self.user_endpoint_config)

    def add(self, function_id: str | uuid.UUID, args: Iterable[Any] | None = (),
            kwargs: dict | None = None) -> None:
        """Queue a call of a registered function; arguments are serialized now (None: none,
        as Globus Compute allows)."""
        self.tasks.append(
            task_entry(function_id, tuple(args or ()), kwargs or {}, self.resource_specification,
                       self.user_endpoint_config, self.max_retries, self.format)
        )

    def __len__(self) -> int:
        return len(self.tasks)


def task_entry(
    function_id: str | uuid.UUID, args: tuple, kwargs: dict,
    resource_specification: dict | None = None, user_endpoint_config: dict | None = None,
    max_retries: int | None = None, format: str = wire.FORMAT_FNRELAY,
) -> dict[str, Any]:
    """One task of a submit request (`max_retries` None: the endpoint's default), its
    arguments serialized in `format`."""
    globus = format == wire.FORMAT_GLOBUS
    entry: dict[str, Any] = {
        "function_id": str(function_id),
        "payload": (gc_serialize.payload(args, kwargs) if globus
                    else serialize.serialize_args(args, kwargs)),
        "resource_specification": resource_specification or {},
        "user_endpoint_config": user_endpoint_config or {},
        "python_version": pyversion.here(),
    }
    if max_retries is not None:
        entry["max_retries"] = max_retries
    return entry


def submit_body(endpoint_id: str | uuid.UUID, tasks: list[dict[str, Any]],
                task_group_id: str | None) -> dict[str, Any]:
    """The JSON body of POST /v1/submit."""
    return {"endpoint_id": str(endpoint_id), "task_group_id": task_group_id, "tasks": tasks}


def submit_size(endpoint_id: str, tasks: list[dict[str, Any]], task_group_id: str | None) -> int:
    """Bytes of that body as globus-sdk sends it (requests' JSON: default separators, ASCII),
    which the broker's payload limit counts: the direct path holds each task to the same count.
    With orjson installed globus-sdk sends a few bytes less (no spaces)."""
    return len(json.dumps(submit_body(endpoint_id, tasks, task_group_id)).encode())


class Client(globus_sdk.BaseClient):
    """A user's connection to an fnrelay broker.

    Credentials: the arguments, else FNRELAY_BROKER_URL / FNRELAY_TOKEN, else the file written
    by ``fnrelay login``; or a globus_sdk `authorizer` instead of the token.

    The keywords after `token` are Globus Compute's (``globus_compute_sdk.Client``): each is
    honoured where it means something here, else ignored with a one-time notice.
    `format="globus-compute"` registers functions and submits tasks in Globus Compute's
    serialization, through the broker's Globus Compute routes: what an official
    globus-compute-endpoint runs (it needs globus-compute-sdk here).
    """

    service_name = "fnrelay"

    def __init__(
        self, broker_url: str | None = None, token: str | None = None, *,
        do_version_check: bool = False,
        code_serialization_strategy: Any = None, data_serialization_strategy: Any = None,
        environment: str | None = None, local_compute_services: bool = False,
        app: Any = None, authorizer: globus_sdk.authorizers.GlobusAuthorizer | None = None,
        format: str = wire.FORMAT_FNRELAY,
    ):
        if app is not None and authorizer is not None:
            raise ValueError("'app' and 'authorizer' are mutually exclusive.")
        if format not in wire.FORMATS:
            raise ValueError(f"format must be one of {', '.join(wire.FORMATS)}, not {format!r}")
        self.format = format
        _note_gc_options(code_serialization_strategy, data_serialization_strategy,
                         environment, local_compute_services, app)
        creds = resolve_credentials(broker_url, token, require_token=authorizer is None)
        self._retry_notice = RetryNotice(creds.broker_url)  # registered by super().__init__
        super().__init__(
            base_url=creds.broker_url + "/v1/",
            authorizer=authorizer or globus_sdk.AccessTokenAuthorizer(creds.token),
            app_name="fnrelay",
        )
        self.broker_url = creds.broker_url
        if bundle := ca_bundle():  # a private CA for the broker's HTTPS certificate
            self.transport.verify_ssl = bundle
        self._registered: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._registered_by_id: dict[int, tuple[Any, str]] = {}
        #: Serialized code of the functions this client registered (the direct path sends it).
        self._bodies: dict[str, str] = {}
        self._register_lock = threading.Lock()
        self._versions_checked: set[str] = set()  # endpoints whose Python versions were read
        if do_version_check:
            self.version_check()

    # --- plumbing ---------------------------------------------------------------------------
    def _register_standard_retry_checks(self, retry_config: RetryConfig) -> None:
        """globus-sdk's checks, after one that tells the user at once that it retries."""
        retry_config.checks.register_check(_quota_not_retried)
        retry_config.checks.register_check(self._retry_notice)
        super()._register_standard_retry_checks(retry_config)

    def _call(self, method: str, path: str, data: Any = None,
              headers: dict[str, str] | None = None,
              query_params: dict[str, Any] | None = None) -> Any:
        with broker_errors(self.broker_url):
            response = self.request(method, path, data=data, headers=headers,
                                    query_params=query_params)
        return response.data

    # --- identity ---------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """``{"user_id", "username"}`` of this client's token."""
        return self._call("GET", "whoami")

    def version(self) -> dict[str, Any]:
        """``{"version", "protocol"}`` of the broker."""
        return self._call("GET", "version")

    def version_check(self, endpoint_version: str | None = None) -> None:
        """Raise VersionMismatch unless the broker speaks this SDK's protocol version.

        Endpoints report their own versions with every result (a mismatch warns then), so
        `endpoint_version` is not compared here.
        """
        if endpoint_version is not None:
            ignored("Client.version_check(endpoint_version=)",
                    "endpoints report their Python and dill versions with each result")
        answer = self.version()
        remote = answer.get("protocol")
        if remote != wire.PROTOCOL_VERSION:
            raise errors.VersionMismatch(
                f"the broker at {self.broker_url} speaks protocol {remote!r} (fnrelay "
                f"{answer.get('version')}), this SDK protocol {wire.PROTOCOL_VERSION!r}: "
                "install the fnrelay version the broker runs")

    # --- functions ---------------------------------------------------------------------------
    def register_function(
        self, function: Any, description: str | None = None, metadata: dict | None = None,
        public: bool = False, group: str | None = None, ha_endpoint_id: str | None = None,
    ) -> str:
        """Register a callable (function or ShellFunction) and return its function id.

        The same object registers only once per client (no request the second time); the same
        code registers to the same id at the broker. Without a description, a function's
        docstring is its description (as in Globus Compute).
        """
        _note_registration_options(metadata, public, group, ha_endpoint_id)
        cached = self._cached_function_id(function)
        if cached:
            return cached
        if description is None and inspect.isroutine(function):
            description = inspect.getdoc(function)
        name = getattr(function, "__name__", type(function).__name__)
        if self.format == wire.FORMAT_GLOBUS:
            function_id = self._register_globus(gc_serialize.function_code(function), name,
                                                description)
        else:
            function_id = self._register(serialize.serialize_function(function), name,
                                         description)
        with self._register_lock:
            try:
                self._registered[function] = function_id
            except TypeError:  # not weak-referenceable or not hashable: keep it alive by id
                self._registered_by_id[id(function)] = (function, function_id)
        return function_id

    def register_source_code(
        self, source: str, function_name: str, description: str | None = None,
        metadata: dict | None = None, public: bool = False, group: str | None = None,
        ha_endpoint_id: str | None = None,
    ) -> str:
        """Register Python source text whose function `function_name` is the entry point.

        The endpoint runs the source and calls that function, so it must compile here first.
        """
        _note_registration_options(metadata, public, group, ha_endpoint_id)
        if not function_name.isidentifier():
            raise ValueError(f"function_name must be a Python identifier, not {function_name!r}")
        try:
            compile(source, f"<source of {function_name}>", "exec")
        except SyntaxError as e:
            raise ValueError(f"the source of {function_name} does not compile: {e}") from None
        code = f"{serialize.TAG_SOURCE}\n{function_name}\n{source}"
        return self._register(code, function_name, description)

    def _register(self, code: str, name: str, description: str | None) -> str:
        body = {"function": code, "function_name": name, "description": description}
        function_id = self._call("POST", "functions", data=body)["function_id"]
        with self._register_lock:
            self._bodies[function_id] = code
        return function_id

    def _register_globus(self, code: str, name: str, description: str | None) -> str:
        body = {"function_name": name, "function_code": code, "description": description}
        return str(self._call("POST", f"{self.broker_url}/v3/functions",
                              data=body)["function_uuid"])

    def _cached_function_id(self, fn: Any) -> str | None:
        with self._register_lock:
            try:
                found = self._registered.get(fn)
            except TypeError:
                found = None
            if found:
                return found
            entry = self._registered_by_id.get(id(fn))
            return entry[1] if entry and entry[0] is fn else None

    def function_body(self, function_id: str) -> str | None:
        """The serialized code of a function this client registered (None: not known here)."""
        with self._register_lock:
            return self._bodies.get(function_id)

    def get_function(self, function_id: str | uuid.UUID) -> dict[str, Any]:
        return self._call("GET", f"functions/{uuid_text('function_id', function_id)}")

    def delete_function(self, function_id: str | uuid.UUID) -> dict[str, Any]:
        """Delete one of your functions: ``{"function_id", "deleted": True}``.

        Refused (BrokerError, HTTP 409) while one of its tasks is unfinished; registering the
        same code again later gives it back its id.
        """
        fid = uuid_text("function_id", function_id)
        answer = self._call("DELETE", f"functions/{fid}")
        with self._register_lock:  # a later register_function must ask the broker again
            self._bodies.pop(fid, None)
            for fn, known in list(self._registered.items()):
                if known == fid:
                    del self._registered[fn]
            for key, (_, known) in list(self._registered_by_id.items()):
                if known == fid:
                    del self._registered_by_id[key]
        return answer

    # --- submitting ---------------------------------------------------------------------------
    def submit(
        self, endpoint_id: str | uuid.UUID, tasks: list[dict[str, Any]],
        task_group_id: str | None = None, request_id: str | None = None,
        check_versions: bool = True,
    ) -> dict[str, Any]:
        """One POST /v1/submit: ``{"task_group_id", "task_ids"}`` in the order of ``tasks``.

        `request_id` is the request's Idempotency-Key (a new one when None). The first submit
        to an endpoint first asks for its status, to warn of other Python versions, unless
        `check_versions` is False (the Executor asks on a thread of its own: a round trip
        less on a first call's way).
        """
        if check_versions:
            self._check_python_versions(str(endpoint_id))
        if self.format == wire.FORMAT_GLOBUS:
            return self._submit_globus(endpoint_id, tasks, task_group_id)
        body = submit_body(endpoint_id, tasks, task_group_id)
        # One key per call: globus-sdk re-sends these same headers when it retries.
        headers = {"Idempotency-Key": request_id or str(uuid.uuid4())}
        return self._call("POST", "submit", data=body, headers=headers)

    def _submit_globus(self, endpoint_id: str | uuid.UUID, tasks: list[dict[str, Any]],
                       task_group_id: str | None) -> dict[str, Any]:
        """The tasks through `POST /v3/endpoints/{id}/submit` (the route decides the format),
        one request per resource specification and endpoint config, as Globus Compute's
        batch carries one of each; the answer in fnrelay's shape, ids in task order."""
        eid = uuid_text("endpoint_id", endpoint_id)
        ids: list[str | None] = [None] * len(tasks)
        runs: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            key = json.dumps([t["resource_specification"], t["user_endpoint_config"]],
                             sort_keys=True)
            runs.setdefault(key, []).append(i)
        group = task_group_id
        for indexes in runs.values():
            first = tasks[indexes[0]]
            by_function: dict[str, list[str]] = {}
            for i in indexes:
                by_function.setdefault(tasks[i]["function_id"], []).append(tasks[i]["payload"])
            answer = self._call("POST", f"{self.broker_url}/v3/endpoints/{eid}/submit", data={
                "tasks": by_function, "task_group_id": group,
                "resource_specification": first["resource_specification"],
                "user_endpoint_config": first["user_endpoint_config"],
                "user_runtime": runtime.of_globus_submitter()})
            group = answer["task_group_id"]
            given = {fid: list(tids) for fid, tids in answer["tasks"].items()}
            for i in indexes:
                ids[i] = given[tasks[i]["function_id"]].pop(0)
        return {"task_group_id": group, "task_ids": ids}

    def _check_python_versions(self, endpoint_id: str) -> None:
        """Warn once if the endpoint runs other Python versions (one status request per
        endpoint; an endpoint that is not yours, or no answer, says nothing)."""
        if endpoint_id in self._versions_checked:
            return
        self._versions_checked.add(endpoint_id)
        try:
            with silenced():
                status = self.get_endpoint_status(endpoint_id)
        except errors.FnRelayError:
            return
        version_notice.notice(endpoint_id, status)

    def run(self, *args: Any, endpoint_id: str | uuid.UUID, function_id: str | uuid.UUID,
            **kwargs: Any) -> str:
        """Run a registered function once on an endpoint; returns the task id."""
        entry = task_entry(function_id, args, kwargs, format=self.format)
        return self.submit(endpoint_id, [entry])["task_ids"][0]

    def create_batch(
        self, task_group_id: str | uuid.UUID | None = None,
        resource_specification: dict | None = None, user_endpoint_config: dict | None = None,
        create_websocket_queue: bool = False, result_serializers: list[str] | None = None,
        *, max_retries: int | None = None,
    ) -> Batch:
        """An empty Batch; its tasks share the given resource spec, endpoint config and retry
        limit. `create_websocket_queue` and `result_serializers` are Globus Compute's: every
        task group has its result queue here, and results come back in fnrelay's format."""
        if create_websocket_queue:
            ignored("Client.create_batch(create_websocket_queue=)",
                    "every task group has its result queue (the Executor reads it)")
        if result_serializers:
            ignored("Client.create_batch(result_serializers=)",
                    "endpoints serialize results with fnrelay's strategies (JSON, else dill)")
        return Batch(str(task_group_id) if task_group_id else None, resource_specification,
                     user_endpoint_config, max_retries, format=self.format)

    def batch_run(self, endpoint_id: str | uuid.UUID, batch: Batch) -> dict[str, Any]:
        """Submit every task of the batch in one request.

        Returns Globus Compute's answer: ``{"tasks": {function_id: [task_id, ...]},
        "task_group_id", "request_id", "endpoint_id"}``, plus ``"task_ids"``: all task ids in
        the order they were added (the mapping loses the order across functions).
        """
        if not batch.tasks:
            raise ValueError("No tasks specified for batch run")
        request_id = str(uuid.uuid4())
        answer = self.submit(endpoint_id, batch.tasks, batch.task_group_id, request_id)
        by_function: dict[str, list[str]] = {}
        for entry, task_id in zip(batch.tasks, answer["task_ids"], strict=True):
            by_function.setdefault(entry["function_id"], []).append(task_id)
        return {"tasks": by_function, "task_group_id": answer["task_group_id"],
                "request_id": request_id, "endpoint_id": str(endpoint_id),
                "task_ids": answer["task_ids"]}

    # --- task groups ---------------------------------------------------------------------------
    def create_task_group(self, task_group_id: str | None = None,
                          endpoint_id: str | None = None) -> dict[str, Any]:
        """Create (or re-attach to) a task group: ``{"task_group_id", "amqp_url", "queue",
        "submit", "result_senders"}``. With ``endpoint_id`` it asks for the direct path to
        that endpoint; ``submit`` says where to publish tasks if it was granted, else None."""
        body: dict[str, Any] = {"task_group_id": task_group_id} if task_group_id else {}
        if endpoint_id:
            body["endpoint_id"] = endpoint_id
        return self._call("POST", "task_groups", data=body)

    def get_task_group(self, task_group_id: str) -> dict[str, Any]:
        """``{"task_group_id", "task_ids"}`` in submission order."""
        return self._call("GET", f"task_groups/{task_group_id}")

    # --- tasks ---------------------------------------------------------------------------------
    def task_record(self, task_id: str | uuid.UUID) -> dict[str, Any]:
        """The broker's record of a task as it stores it: status, pending, history, details,
        the serialized result or the exception's description (fnrelay's own view; `get_task`
        is Globus Compute's)."""
        return self._call("GET", f"tasks/{task_id}")

    def get_task(self, task_id: str | uuid.UUID) -> dict[str, Any]:
        """The task as Globus Compute gives it: ``{"pending", "status"}``, and once it
        succeeded ``"result"`` (the value) and ``"completion_t"``.

        A failed task raises its exception here, as Globus Compute does (TaskExecutionFailed,
        and its own type where it can be re-created). fnrelay's fields of the record
        (task_id, history, details, endpoint_id, function_id, task_group_id) come along.
        """
        task = _task_view(self, self.task_record(task_id))
        if "exception" in task:
            raise task["exception"]
        return task

    def get_result(self, task_id: str | uuid.UUID) -> Any:
        """The task's value; raises TaskPending, TaskCancelled or the remote error (both
        TaskExecutionFailed and its own type)."""
        task = _task_view(self, self.task_record(task_id))
        if task["pending"]:
            raise errors.TaskPending(task["status"], str(task_id))
        if "result" in task:
            return task["result"]
        raise task["exception"]

    def get_result_blob(self, task_id: str) -> bytes:
        """The raw bytes of a finished task's result blob (a result too large for a message).

        ``get_result`` and futures fetch it by themselves; only the task's owner may read it.
        """
        with broker_errors(self.broker_url):
            return self.request("GET", f"tasks/{task_id}/blob").binary_content

    def get_tasks(self, task_ids: list[str]) -> dict[str, Any]:
        """POST /v1/tasks/batch_status: ``{"tasks": {id: record}, "unknown": [...]}``."""
        return self._call("POST", "tasks/batch_status", data={"task_ids": list(task_ids)})

    def get_batch_result(self, task_id_list: list[str | uuid.UUID]) -> dict[str, dict[str, Any]]:
        """``{task_id: {"pending", "status", "result" | "exception", "completion_t"}}``.

        As in Globus Compute, ids the broker does not know (or that are someone else's) are
        left out. Unlike it, a failed task is not left out: its entry holds the exception
        object (not raised), TaskExecutionFailed and its own type.
        """
        answer = self.get_tasks([str(t) for t in task_id_list])
        return {task_id: _task_view(self, record) for task_id, record in answer["tasks"].items()}

    def list_tasks(
        self, status: str | Iterable[str] | None = None, *,
        endpoint_id: str | uuid.UUID | None = None, function_id: str | uuid.UUID | None = None,
        since: float | None = None, until: float | None = None, limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Your tasks, newest first: ``[{"task_id", "status", "pending", "endpoint_id",
        "function_id", "task_group_id", "created", "completed"}]`` (no results: `task_record`
        or `get_result` has those).

        `status` is one state or several; `since`/`until` bound the submission time (epoch
        seconds, `until` excluded); `limit` caps the number returned (None: all, fetched
        page by page). Other users' tasks are never listed.
        """
        params = _list_params(status, endpoint_id, function_id, since, until)
        out: list[dict[str, Any]] = []
        while limit is None or len(out) < limit:
            want = LIST_PAGE if limit is None else min(LIST_PAGE, limit - len(out))
            page = self._call("GET", "tasks", query_params={**params, "limit": want})
            out += page["tasks"]
            if not page.get("next"):
                break
            params["after"] = page["next"]
        return out

    def cancel(self, task_id: str) -> str:
        """Cancel a task: a queued one never runs, a running one is killed.

        Returns the task's status afterwards: ``cancelled``, or the terminal status it
        already had.
        """
        return self._call("POST", f"tasks/{task_id}/cancel")["status"]

    # --- endpoints -----------------------------------------------------------------------------
    def get_endpoint_status(self, endpoint_id: str | uuid.UUID) -> dict[str, Any]:
        """``{"endpoint_id", "status": "online"|"offline", "last_heartbeat", "details"}``;
        details is what the last heartbeat said (engine, workers, busy, python_version)."""
        return self._call("GET", f"endpoints/{endpoint_id}/status")

    def get_endpoint_metadata(self, endpoint_id: str | uuid.UUID) -> dict[str, Any]:
        """What the broker knows of one of your endpoints: ``{"endpoint_id", "name",
        "status", "last_heartbeat", "created", "metadata"}``; metadata is what the endpoint
        reported at registration (hostname, engine, workers) and its owner's policy."""
        return self._call("GET", f"endpoints/{uuid_text('endpoint_id', endpoint_id)}")

    def get_endpoints(self, role: str | None = None) -> list[dict[str, Any]]:
        """This user's endpoints: ``[{"endpoint_id", "uuid", "name", "status",
        "last_heartbeat"}]`` (``uuid``, the same id, is the key Globus Compute's records use).

        Globus Compute's `role` ("owner", "any") is accepted; the list is always the
        endpoints you own (others' shared endpoints are not listed)."""
        if role not in (None, "owner"):
            ignored(f"Client.get_endpoints(role={role!r})",
                    "the list holds the endpoints you own")
        records = self._call("GET", "endpoints")["endpoints"]
        return [{**e, "uuid": e["endpoint_id"]} for e in records]

    def get_allowed_functions(self, endpoint_id: str | uuid.UUID) -> dict[str, Any]:
        """``{"endpoint_id", "restricted", "functions"}``: the function ids (or code SHA-256
        digests) other users may run on your shared endpoint; ``restricted`` False: none
        listed, so only you can use it."""
        eid = uuid_text("endpoint_id", endpoint_id)
        return self._call("GET", f"endpoints/{eid}/allowed_functions")

    def delete_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"endpoints/{endpoint_id}")

    def stop_endpoint(self, endpoint_id: str | uuid.UUID) -> dict[str, Any]:
        """Stop one of your endpoints: the broker closes its connections and refuses its
        registration until it is started again where it runs (``fnrelay-endpoint start``)."""
        eid = uuid_text("endpoint_id", endpoint_id)
        return self._call("POST", f"endpoints/{eid}/stop")

    def get_worker_hardware_details(self, endpoint_id: str | uuid.UUID) -> str:
        """Run a report of the worker's hardware on the endpoint; returns its task id, whose
        result is the report's text (``get_result``)."""
        function_id = self.register_function(run_hardware_report)
        return self.run(endpoint_id=endpoint_id, function_id=function_id)


def _note_gc_options(code_strategy: Any, data_strategy: Any, environment: str | None,
                     local_compute_services: bool, app: Any) -> None:
    """The one-time notices for Globus Compute's Client keywords that mean nothing here."""
    if code_strategy is not None or data_strategy is not None:
        ignored("Client(code_serialization_strategy=, data_serialization_strategy=)",
                "fnrelay picks its strategy per value (dill by value, JSON, source text)")
    if environment is not None or local_compute_services:
        ignored("Client(environment=, local_compute_services=)",
                "the broker is the one in broker_url, FNRELAY_BROKER_URL or `fnrelay login`")
    if app is not None:
        ignored("Client(app=)", "fnrelay authenticates with its own token (`fnrelay login`); "
                "pass authorizer= for a globus_sdk authorizer")


def _note_registration_options(metadata: dict | None, public: bool, group: str | None,
                               ha_endpoint_id: str | None) -> None:
    if metadata:
        ignored("register_function(metadata=)",
                "endpoints report their Python and dill versions with each result")
    if public or group:
        ignored("register_function(public=, group=)", "functions are their owner's; share an "
                "endpoint instead, listing the functions in its allowed_functions")
    if ha_endpoint_id:
        ignored("register_function(ha_endpoint_id=)", "fnrelay has no high-assurance endpoints")


#: Tasks per request of `Client.list_tasks` (the broker's most).
LIST_PAGE = 1000


def _list_params(status: str | Iterable[str] | None, endpoint_id: str | uuid.UUID | None,
                 function_id: str | uuid.UUID | None, since: float | None,
                 until: float | None) -> dict[str, Any]:
    """The query of GET /v1/tasks; a filter left out is not sent."""
    states = [status] if isinstance(status, str) else list(status or [])
    params: dict[str, Any] = {
        "status": ",".join(str(s) for s in states) or None,
        "endpoint_id": uuid_text("endpoint_id", endpoint_id) if endpoint_id else None,
        "function_id": uuid_text("function_id", function_id) if function_id else None,
        "since": since, "until": until,
    }
    return {k: v for k, v in params.items() if v is not None}


def _task_view(client: Client, record: dict[str, Any]) -> dict[str, Any]:
    """A task record as Globus Compute shows a task: ``pending``, ``status``, and once
    finished ``completion_t`` with ``result`` (deserialized) or ``exception`` (an object);
    a cancelled task has ``reason``. fnrelay's other fields stay beside them."""
    keep = ("task_id", "endpoint_id", "function_id", "task_group_id", "created", "history",
            "details")
    task: dict[str, Any] = {k: record[k] for k in keep if k in record}
    task.update(pending=record["pending"], status=record["status"])
    if record["pending"]:
        return task
    completed = record.get("completed")
    task["completion_t"] = str(completed) if completed is not None else "unknown"
    ok, value = record_outcome(record, client)
    if ok:
        task["result"] = value
    else:
        task["exception"] = value
        if isinstance(value, errors.TaskCancelled):
            task["reason"] = str(value)
    return task


def record_outcome(record: dict[str, Any], client: Client) -> tuple[bool, Any]:
    """(ok, value) of a finished task's record: its value (a blob fetched), or the exception
    a caller gets (`fnrelay.results.outcome`)."""
    exc = record.get("exception")
    result = record.get("result")
    if record["status"] == TaskState.SUCCESS.value:
        result = blobs.resolve(record["task_id"], result, client.get_result_blob)
        if record.get("format") == wire.FORMAT_GLOBUS and result is not None:
            return True, gc_serialize.deserialize(result)
    return outcome(
        record["task_id"], record["status"], result,
        ExceptionInfo.from_dict(exc) if exc else None, record.get("details"),
        record.get("completed"),
    )
