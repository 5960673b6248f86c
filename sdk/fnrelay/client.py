"""The REST client of the broker: register functions, submit tasks, read their results.

Built on globus-sdk's BaseClient for the HTTP transport and its retries (network errors, 5xx,
429). Because POSTs are retried too, every submit carries an Idempotency-Key that stays the
same across the retries of that one call, so a retried submit never creates tasks twice.
"""

from __future__ import annotations

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

from fnrelay import blobs, errors, serialize
from fnrelay.amqp import ENV_CA_BUNDLE, ca_bundle
from fnrelay.config import resolve_credentials
from fnrelay.results import outcome
from fnrelay.wire import ExceptionInfo, TaskState

_STATUS_ERRORS: dict[int, type[errors.BrokerError]] = {
    401: errors.AuthenticationError,
    403: errors.AuthenticationError,
    404: errors.NotFoundError,
    413: errors.PayloadTooLargeError,
    502: errors.BrokerUnavailableError,
    503: errors.BrokerUnavailableError,
    504: errors.BrokerUnavailableError,
}


@contextmanager
def broker_errors(base_url: str) -> Iterator[None]:
    """Turn globus-sdk's exceptions into fnrelay.errors with the broker's own message."""
    try:
        yield
    except globus_sdk.GlobusAPIError as e:
        cls = _STATUS_ERRORS.get(e.http_status, errors.BrokerError)
        message = e.message or e.text or f"HTTP {e.http_status}"
        raise cls(message, http_status=e.http_status, code=e.code) from None
    except globus_sdk.NetworkError as e:
        if "CERTIFICATE_VERIFY_FAILED" in repr(getattr(e, "underlying_exception", e)):
            raise errors.BrokerUnavailableError(
                f"cannot verify the TLS certificate of the broker at {base_url}: set "
                f"{ENV_CA_BUNDLE} to the PEM file of the CA that signed it") from None
        raise errors.BrokerUnavailableError(
            f"cannot reach the broker at {base_url}: {e}; is it running and is the URL right?"
        ) from None


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

    def __post_init__(self) -> None:
        self.resource_specification = json_object(
            "resource_specification", self.resource_specification)
        self.user_endpoint_config = json_object("user_endpoint_config", self.user_endpoint_config)

    def add(self, function_id: str | uuid.UUID, args: Iterable[Any] = (),
            kwargs: dict | None = None) -> None:
        """Queue a call of a registered function; arguments are serialized now."""
        self.tasks.append(
            task_entry(function_id, tuple(args), kwargs or {}, self.resource_specification,
                       self.user_endpoint_config, self.max_retries)
        )

    def __len__(self) -> int:
        return len(self.tasks)


def task_entry(
    function_id: str | uuid.UUID, args: tuple, kwargs: dict,
    resource_specification: dict | None = None, user_endpoint_config: dict | None = None,
    max_retries: int | None = None,
) -> dict[str, Any]:
    """One task of a submit request (`max_retries` None: the endpoint's default)."""
    entry: dict[str, Any] = {
        "function_id": str(function_id),
        "payload": serialize.serialize_args(args, kwargs),
        "resource_specification": resource_specification or {},
        "user_endpoint_config": user_endpoint_config or {},
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
    by ``fnrelay login``.
    """

    service_name = "fnrelay"

    def __init__(self, broker_url: str | None = None, token: str | None = None):
        creds = resolve_credentials(broker_url, token)
        super().__init__(
            base_url=creds.broker_url + "/v1/",
            authorizer=globus_sdk.AccessTokenAuthorizer(creds.token),
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

    # --- plumbing ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, data: Any = None,
              headers: dict[str, str] | None = None) -> Any:
        with broker_errors(self.broker_url):
            response = self.request(method, path, data=data, headers=headers)
        return response.data

    # --- identity ---------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """``{"user_id", "username"}`` of this client's token."""
        return self._call("GET", "whoami")

    def version(self) -> dict[str, Any]:
        return self._call("GET", "version")

    # --- functions ---------------------------------------------------------------------------
    def register_function(self, fn: Any, description: str | None = None) -> str:
        """Register a callable (function or ShellFunction) and return its function id.

        The same object registers only once per client (no request the second time); the same
        code registers to the same id at the broker.
        """
        cached = self._cached_function_id(fn)
        if cached:
            return cached
        code = serialize.serialize_function(fn)
        body = {
            "function": code,
            "function_name": getattr(fn, "__name__", type(fn).__name__),
            "description": description,
        }
        function_id = self._call("POST", "functions", data=body)["function_id"]
        with self._register_lock:
            self._bodies[function_id] = code
            try:
                self._registered[fn] = function_id
            except TypeError:  # not weak-referenceable or not hashable: keep it alive by id
                self._registered_by_id[id(fn)] = (fn, function_id)
        return function_id

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

    def get_function(self, function_id: str) -> dict[str, Any]:
        return self._call("GET", f"functions/{function_id}")

    # --- submitting ---------------------------------------------------------------------------
    def submit(
        self, endpoint_id: str | uuid.UUID, tasks: list[dict[str, Any]],
        task_group_id: str | None = None,
    ) -> dict[str, Any]:
        """One POST /v1/submit: ``{"task_group_id", "task_ids"}`` in the order of ``tasks``."""
        body = submit_body(endpoint_id, tasks, task_group_id)
        # One key per call: globus-sdk re-sends these same headers when it retries.
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        return self._call("POST", "submit", data=body, headers=headers)

    def run(self, *args: Any, endpoint_id: str | uuid.UUID, function_id: str | uuid.UUID,
            **kwargs: Any) -> str:
        """Run a registered function once on an endpoint; returns the task id."""
        return self.submit(endpoint_id, [task_entry(function_id, args, kwargs)])["task_ids"][0]

    def create_batch(
        self, task_group_id: str | None = None, resource_specification: dict | None = None,
        user_endpoint_config: dict | None = None, max_retries: int | None = None,
    ) -> Batch:
        """An empty Batch; its tasks share the given resource spec, endpoint config and retry
        limit."""
        return Batch(task_group_id, resource_specification, user_endpoint_config, max_retries)

    def batch_run(self, endpoint_id: str | uuid.UUID, batch: Batch) -> list[str]:
        """Submit every task of the batch in one request; returns their task ids in order."""
        if not batch.tasks:
            return []
        return self.submit(endpoint_id, batch.tasks, batch.task_group_id)["task_ids"]

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
    def get_task(self, task_id: str) -> dict[str, Any]:
        """The task record: status, pending, history, result or exception, details."""
        return self._call("GET", f"tasks/{task_id}")

    def get_result(self, task_id: str) -> Any:
        """The task's value; raises TaskPending, TaskCancelled or the re-created remote error."""
        record = self.get_task(task_id)
        if record["pending"]:
            raise errors.TaskPending(task_id, record["status"])
        ok, value = _record_outcome(record, self)
        if ok:
            return value
        raise value

    def get_result_blob(self, task_id: str) -> bytes:
        """The raw bytes of a finished task's result blob (a result too large for a message).

        ``get_result`` and futures fetch it by themselves; only the task's owner may read it.
        """
        with broker_errors(self.broker_url):
            return self.request("GET", f"tasks/{task_id}/blob").binary_content

    def get_tasks(self, task_ids: list[str]) -> dict[str, Any]:
        """POST /v1/tasks/batch_status: ``{"tasks": {id: record}, "unknown": [...]}``."""
        return self._call("POST", "tasks/batch_status", data={"task_ids": list(task_ids)})

    def get_batch_result(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``{task_id: {"pending", "status", "result" | "exception"}}`` for many tasks at once.

        ``exception`` is the re-created exception object (not raised). Unknown ids, or ids of
        someone else's tasks, raise NotFoundError.
        """
        answer = self.get_tasks(task_ids)
        if answer.get("unknown"):
            raise errors.NotFoundError(
                "unknown task ids: " + ", ".join(answer["unknown"]), http_status=404,
                code="NOT_FOUND",
            )
        out: dict[str, dict[str, Any]] = {}
        for task_id in task_ids:
            record = answer["tasks"][task_id]
            entry: dict[str, Any] = {"pending": record["pending"], "status": record["status"]}
            if not record["pending"]:
                ok, value = _record_outcome(record, self)
                entry["result" if ok else "exception"] = value
            out[task_id] = entry
        return out

    def cancel(self, task_id: str) -> str:
        """Cancel a task: a queued one never runs, a running one is killed.

        Returns the task's status afterwards: ``cancelled``, or the terminal status it
        already had.
        """
        return self._call("POST", f"tasks/{task_id}/cancel")["status"]

    # --- endpoints -----------------------------------------------------------------------------
    def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        """``{"endpoint_id", "status": "online"|"offline", "last_heartbeat"}``."""
        return self._call("GET", f"endpoints/{endpoint_id}/status")

    def get_endpoints(self) -> list[dict[str, Any]]:
        """This user's endpoints: ``[{"endpoint_id", "name", "status", "last_heartbeat"}]``."""
        return self._call("GET", "endpoints")["endpoints"]

    def delete_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"endpoints/{endpoint_id}")


def _record_outcome(record: dict[str, Any], client: Client) -> tuple[bool, Any]:
    exc = record.get("exception")
    result = record.get("result")
    if record["status"] == TaskState.SUCCESS.value:
        result = blobs.resolve(record["task_id"], result, client.get_result_blob)
    return outcome(
        record["task_id"], record["status"], result,
        ExceptionInfo.from_dict(exc) if exc else None, record.get("details"),
    )
