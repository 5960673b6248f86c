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

from fnrelay import errors, version_notice
from fnrelay.executor.transport import BrokerApi
from fnrelay.library_logs import reports_its_own_errors
from fnrelay.retry_notice import silenced

log = logging.getLogger(__name__)

CHECK_EVERY = 10.0  # seconds between two status requests for one endpoint while tasks wait
FRESH = 2.0  # a status this recent is good enough to explain a timeout
ASK_AT_MOST = 2.0  # seconds a timed-out result() waits for the broker's answer


class EndpointStates:
    """The last status the broker gave of each endpoint, refreshed at most every CHECK_EVERY
    seconds by `watch` (the result watcher's idle moments), and on demand by `describe`.

    `watch` asks from a short-lived thread of its own: a broker that does not answer is
    retried for ~15 s, which must not hold up the watcher's results; and it asks silently
    (`retry_notice.silenced`), as the watcher reports a broker outage itself."""

    def __init__(self, api: BrokerApi):
        self._api = api
        self._lock = threading.Lock()
        self._checked: dict[str, float] = {}  # endpoint id -> monotonic time of last request
        self._status: dict[str, dict[str, Any] | str] = {}  # record, or why there is none
        self._offline: set[str] = set()  # warned about, not seen online since
        self._checking = threading.Event()  # a watch thread is running

    def watch(self, endpoint_ids: Iterable[str | None]) -> None:
        """Check the endpoints tasks wait for, each at most every CHECK_EVERY seconds (in
        the background; returns at once)."""
        with self._lock:
            due = [e for e in set(endpoint_ids) if e is not None and self._due(e, CHECK_EVERY)]
            if not due or self._checking.is_set():
                return
            self._checking.set()
        threading.Thread(target=self._check, args=(due,), name="fnrelay-endpoint-check",
                         daemon=True).start()

    def _check(self, endpoint_ids: list[str]) -> None:
        try:
            for endpoint_id in endpoint_ids:
                self._ask(endpoint_id, CHECK_EVERY)
        finally:
            self._checking.clear()

    def _ask(self, endpoint_id: str, max_age: float) -> None:
        reports_its_own_errors()  # runs in a thread of its own; the watcher reports outages
        with silenced():
            self._refresh(endpoint_id, max_age)

    def _due(self, endpoint_id: str, max_age: float) -> bool:
        last = self._checked.get(endpoint_id)
        return last is None or time.monotonic() - last >= max_age

    def describe(self, endpoint_id: str | None) -> str:
        """A phrase for an error message: the endpoint's state as the broker says it."""
        if endpoint_id is None:
            return "its endpoint is not known here"
        asking = threading.Thread(target=self._ask, args=(endpoint_id, FRESH), daemon=True,
                                  name="fnrelay-endpoint-check")
        asking.start()
        asking.join(ASK_AT_MOST)  # a broker that does not answer is retried for ~15 s
        with self._lock:
            status = self._status.get(endpoint_id)
        if status is None:
            return (f"the state of endpoint {endpoint_id} is unknown (the broker at "
                    f"{self._api.broker_url} did not answer within {ASK_AT_MOST:g} s)")
        if isinstance(status, str):
            return f"the state of endpoint {endpoint_id} is unknown ({status})"
        if status.get("status") == "online":
            return f"endpoint {endpoint_id} is online"
        return f"endpoint {endpoint_id} is offline {_since(status.get('last_heartbeat'))}"

    def _refresh(self, endpoint_id: str, max_age: float) -> dict[str, Any] | str:
        with self._lock:
            if not self._due(endpoint_id, max_age) and endpoint_id in self._status:
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
            version_notice.notice(endpoint_id, status)
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
