"""What the broker says of the endpoints an Executor's tasks wait for.

A task sent to a stopped endpoint waits until the endpoint comes back, which may be never: the
user waiting on its future is told so (a WARNING once per outage of each endpoint, through the
logging that reaches a script's and a notebook's stderr), and a ``result(timeout=...)`` that
runs out says which task and what state its endpoint is in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from fnrelay import errors
from fnrelay.executor.transport import BrokerApi

log = logging.getLogger(__name__)

CHECK_EVERY = 10.0  # seconds between two status requests for one endpoint while tasks wait
FRESH = 2.0  # a status this recent is good enough to explain a timeout


class EndpointStates:
    """The last status the broker gave of each endpoint, refreshed at most every CHECK_EVERY
    seconds by `watch` (the result watcher's idle moments), and on demand by `describe`."""

    def __init__(self, api: BrokerApi):
        self._api = api
        self._lock = threading.Lock()
        self._checked: dict[str, float] = {}  # endpoint id -> monotonic time of last request
        self._status: dict[str, dict[str, Any] | str] = {}  # record, or why there is none
        self._offline: set[str] = set()  # warned about, not seen online since

    def watch(self, endpoint_ids: Iterable[str | None]) -> None:
        """Check the endpoints tasks wait for, each at most every CHECK_EVERY seconds."""
        for endpoint_id in set(endpoint_ids):
            if endpoint_id is not None:
                self._refresh(endpoint_id, CHECK_EVERY)

    def describe(self, endpoint_id: str | None) -> str:
        """A phrase for an error message: the endpoint's state as the broker says it."""
        if endpoint_id is None:
            return "its endpoint is not known here"
        status = self._refresh(endpoint_id, FRESH)
        if isinstance(status, str):
            return f"the state of endpoint {endpoint_id} is unknown ({status})"
        if status.get("status") == "online":
            return f"endpoint {endpoint_id} is online"
        return f"endpoint {endpoint_id} is offline {_since(status.get('last_heartbeat'))}"

    def _refresh(self, endpoint_id: str, max_age: float) -> dict[str, Any] | str:
        with self._lock:
            last = self._checked.get(endpoint_id)
            if last is not None and time.monotonic() - last < max_age:
                return self._status[endpoint_id]
            self._checked[endpoint_id] = time.monotonic()
        try:
            status: dict[str, Any] | str = self._api.get_endpoint_status(endpoint_id)
        except errors.FnRelayError as e:
            status = f"the broker at {self._api.broker_url} did not say: {e}"
        with self._lock:
            self._status[endpoint_id] = status
        if not isinstance(status, str):
            self._report(endpoint_id, status)
        return status

    def _report(self, endpoint_id: str, status: dict[str, Any]) -> None:
        """WARNING when an endpoint is seen offline, INFO when it is back (once each)."""
        offline = status.get("status") != "online"
        with self._lock:
            news = offline != (endpoint_id in self._offline)
            if offline:
                self._offline.add(endpoint_id)
            else:
                self._offline.discard(endpoint_id)
        if not news:
            return
        if offline:
            log.warning("endpoint %s is offline %s: its tasks wait until it is started again "
                        "(fnrelay-endpoint start)", endpoint_id,
                        _since(status.get("last_heartbeat")))
        else:
            log.info("endpoint %s is online again", endpoint_id)


def _since(last_heartbeat: Any) -> str:
    if not isinstance(last_heartbeat, (int, float)):
        return "(it has never connected)"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last_heartbeat))
    return f"since {when} (its last heartbeat)"
