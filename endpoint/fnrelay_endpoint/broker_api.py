"""The broker's REST API as the endpoint side calls it: one client, one error mapping.

The agent, the multi-user manager, endpoint creation, the result blob uploader and the CLI
all talk to the broker over HTTPS with a bearer token. Every answer becomes a `fnrelay.errors`
exception here, so each caller reads the same texts: 401/403 AuthenticationError, other 4xx
BrokerError, 5xx and unreachable brokers BrokerUnavailableError, always with the broker's own
message. `retry` is the one retry loop for the callers that wait out an outage; it sleeps on
the caller's stop event, so stopping never waits for a backoff to end.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from fnrelay import backoff
from fnrelay.amqp import requests_verify
from fnrelay.errors import (
    AuthenticationError,
    BrokerError,
    BrokerUnavailableError,
    EndpointLimitError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to connect to the broker and to wait between bytes of its answer.
TIMEOUT = 30.0
#: A result blob may take long to send and to store.
BLOB_TIMEOUT = (30.0, 600.0)
#: Longest broker message quoted in an error.
MESSAGE_LIMIT = 300
#: Where the 4xx text of a failure shows the HTTP status.
STATUS = "{status}"


class Stopped(Exception):
    """The caller's stop event was set while a call waited to be retried."""


class BrokerAPI:
    """The calls the endpoint makes, with one token (the endpoint's or its owner's)."""

    def __init__(self, broker_url: str, token: str):
        self.broker_url, self.token = broker_url.rstrip("/"), token

    # --- endpoints ---------------------------------------------------------------------------
    def create_endpoint(self, name: str, metadata: dict[str, Any],
                        local_name: str | None = None) -> dict[str, Any]:
        """POST /v1/endpoints: the broker picks the new endpoint's id. Errors quote
        `local_name` (the endpoint's directory), the name its owner typed, if given."""
        r = self._request("POST", "/v1/endpoints", json={"name": name, "metadata": metadata})
        quoted = local_name or name
        self._check(r, f"creating endpoint {quoted!r} failed", forbidden=(
            f"the broker refused to create endpoint {quoted!r}: {error_text(r)}. An endpoint "
            "token cannot create an endpoint: start it once with a user token, then give it "
            "the endpoint token"))
        return _object(r)

    def update_endpoint(self, endpoint_id: str, name: str,
                        metadata: dict[str, Any]) -> dict[str, Any]:
        """PUT /v1/endpoints/{id} (registration at each start): what the broker offers this
        session (AMQP URL, queues, heartbeat period, result blobs)."""
        r = self._request("PUT", f"/v1/endpoints/{endpoint_id}",
                          json={"name": name, "metadata": metadata})
        self._check(r, "registration failed", not_found=(
            " (if it was deleted, remove endpoint.json from the endpoint's directory to "
            "register it as a new endpoint)"))
        return _object(r)

    def whoami(self) -> dict[str, Any]:
        """GET /v1/whoami: the token's broker user (`username`, `user_id`)."""
        r = self._request("GET", "/v1/whoami")
        self._check(r, f"GET /v1/whoami failed ({STATUS})")
        return _object(r)

    def endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        """GET /v1/endpoints/{id}/status: what the broker sees of the endpoint."""
        path = f"/v1/endpoints/{endpoint_id}/status"
        r = self._request("GET", path)
        self._check(r, f"GET {path} failed ({STATUS})")
        return _object(r)

    def delete_endpoint(self, endpoint_id: str) -> bool:
        """DELETE /v1/endpoints/{id}; False if the broker did not know it."""
        path = f"/v1/endpoints/{endpoint_id}"
        r = self._request("DELETE", path)
        if r.status_code == 404:
            return False
        self._check(r, f"DELETE {path} failed ({STATUS})")
        return True

    def child_credentials(self, manager_id: str, child_id: str) -> dict[str, Any]:
        """POST .../children/{child}/credentials: a multi-user child's RabbitMQ account (a
        new password per call) and task queue."""
        r = self._request("POST", f"/v1/endpoints/{manager_id}/children/{child_id}/credentials")
        self._check(r, f"the broker refused credentials for child {child_id} ({STATUS})")
        return _object(r)

    def upload_blob(self, endpoint_id: str, task_id: str, data: bytes, sha256: str) -> None:
        """PUT a result too large for a message. 409 (the task has its result already; the
        first one wins) counts as done: there is nothing left to send."""
        r = self._request("PUT", f"/v1/endpoints/{endpoint_id}/blobs/{task_id}", data=data,
                          timeout=BLOB_TIMEOUT,
                          headers={"Content-Type": "application/octet-stream",
                                   "X-Fnrelay-Sha256": sha256})
        if r.status_code != 409:
            self._check(r, f"HTTP {STATUS}")

    # --- one request ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, *,
                 timeout: float | tuple[float, float] = TIMEOUT,
                 headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(method, f"{self.broker_url}{path}", timeout=timeout,
                                    verify=requests_verify(),
                                    headers={"Authorization": f"Bearer {self.token}",
                                             **(headers or {})}, **kwargs)
        except requests.RequestException as e:
            raise BrokerUnavailableError(
                f"cannot reach the broker at {self.broker_url}: {_reason(e)}") from e

    def _check(self, r: requests.Response, failed: str, not_found: str = "",
               forbidden: str | None = None) -> None:
        """Raise the error for a failed answer. `failed` begins the text of a 4xx (STATUS in
        it becomes the HTTP status); `not_found` is appended to a 404's, and `forbidden`
        replaces a 403's."""
        if r.ok:
            return
        status, message = r.status_code, error_text(r)
        if _code(r) == "TOO_MANY_ENDPOINTS":  # a 403 about the user's count, not the token
            raise EndpointLimitError(f"{failed.replace(STATUS, str(status))}: {message}",
                                     status, "TOO_MANY_ENDPOINTS")
        if status == 403 and forbidden is not None:
            raise AuthenticationError(forbidden, status)
        if status in (401, 403):
            raise AuthenticationError(f"the broker refused the token: {message}", status)
        if status >= 500:
            raise BrokerUnavailableError(f"the broker answered {status}: {message}", status)
        hint = not_found if status == 404 else ""
        raise BrokerError(f"{failed.replace(STATUS, str(status))}: {message}{hint}", status)


def retry(call: Callable[[], T], stop: threading.Event, *,
          on_retry: Callable[[BrokerError, float], None],
          retryable: Callable[[BrokerError], bool] = lambda e: isinstance(
              e, BrokerUnavailableError),
          attempts: int | None = None, cap: float = 60.0) -> T:
    """`call()` until it succeeds, waiting `fnrelay.backoff` delays between retryable
    failures (by default the broker being unreachable or failing, 5xx). After `attempts`
    calls (None: no limit) the last error is raised; Stopped if `stop` is set meanwhile."""
    attempt = 0
    while not stop.is_set():
        try:
            return call()
        except BrokerError as e:
            if not retryable(e):
                raise
            attempt += 1
            if attempts is not None and attempt >= attempts:
                raise
            delay = backoff.delay(attempt, cap=cap)
            on_retry(e, delay)
            stop.wait(delay)
    raise Stopped


def _code(r: requests.Response) -> str | None:
    """The `code` of the broker's JSON error answer, if it has one."""
    try:
        body = r.json()
    except ValueError:
        return None
    return str(body.get("code")) if isinstance(body, dict) else None


def error_text(r: requests.Response) -> str:
    """The broker's own words for a failed request (its JSON `message`), else the text."""
    try:
        body = r.json()
    except ValueError:
        return r.text[:MESSAGE_LIMIT] or r.reason
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or r.text)[:MESSAGE_LIMIT]


def _object(r: requests.Response) -> dict[str, Any]:
    body = r.json()
    if not isinstance(body, dict):
        raise BrokerError(f"the broker answered {r.request.method} {r.url} with "
                          f"{type(body).__name__}, not an object", r.status_code)
    return body


def _reason(e: Exception) -> str:
    """The useful part of a requests error ("[Errno 111] Connection refused")."""
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", str(e))
    return m.group(0) if m else (str(e) or type(e).__name__)
