"""In-memory stand-ins for what the Executor's parts reach outside (fnrelay.executor.transport):
the broker's REST API, the task group's result queue and the direct path's publisher. They
keep what they were asked, so tests check it; their failures are switched on by the test.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from fnrelay import errors, serialize, wire
from fnrelay.client import submit_size
from fnrelay.direct import DirectUnavailable
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.pending import PendingTable
from fnrelay.executor.transport import Delivery, StreamError, Transport

BROKER_ACCOUNT, ENDPOINT_ACCOUNT = "fnrelay-broker", "fnrelay-endpoint-1"
AMQP_URL = "amqp://group-reader:s3cret@rabbit.test:5672/%2F"


class FakeApi:
    """The broker's REST API, in memory: tasks it accepted, results it holds."""

    broker_url = "https://broker.test"

    def __init__(self, grant_direct: bool = False, payload_limit: int | None = None):
        self.grant_direct, self.payload_limit = grant_direct, payload_limit
        self.lock = threading.Lock()
        self.submits: list[list[dict[str, Any]]] = []  # the tasks of each accepted submit
        self.submit_endpoints: list[str] = []  # the endpoint of each accepted submit
        self.registrations: list[dict[str, Any]] = []  # the keywords of each registration
        self.attaches = 0
        self.records: dict[str, dict[str, Any]] = {}  # task id -> its record at the broker
        self.bodies: dict[str, str] = {}  # function id -> code (registered by this client)
        self.refuse: BaseException | None = None  # raised by submit
        self.refusals = 0  # submits refused so
        self.down = False  # every call fails as if the broker could not be reached
        self.polls = 0
        self.cancels: list[str] = []

    def _check_up(self) -> None:
        if self.down:
            raise errors.BrokerUnavailableError("the broker does not answer")

    def register_function(self, fn: Any, **kwargs: Any) -> str:
        self.registrations.append(kwargs)
        function_id = str(uuid.uuid4())
        self.bodies[function_id] = serialize.serialize_function(fn)
        return function_id

    def function_body(self, function_id: str) -> str | None:
        return self.bodies.get(function_id)

    def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        self._check_up()
        return {"endpoint_id": endpoint_id, "status": "online", "last_heartbeat": 0.0}

    def create_task_group(self, task_group_id: str | None = None,
                          endpoint_id: str | None = None) -> dict[str, Any]:
        self._check_up()
        self.attaches += 1
        gid = task_group_id or str(uuid.uuid4())
        grant = None
        if endpoint_id and self.grant_direct:
            grant = {"exchange": "fnrelay.submit", "routing_key": endpoint_id,
                     "payload_limit": self.payload_limit}
        return {"task_group_id": gid, "amqp_url": AMQP_URL, "queue": f"group.{gid}",
                "result_senders": [BROKER_ACCOUNT, ENDPOINT_ACCOUNT], "submit": grant}

    def get_task_group(self, task_group_id: str) -> dict[str, Any]:
        return {"task_group_id": task_group_id, "task_ids": list(self.records)}

    def submit(self, endpoint_id: Any, tasks: list[dict[str, Any]],
               task_group_id: str | None = None, request_id: str | None = None,
               check_versions: bool = True) -> dict[str, Any]:
        self._check_up()
        if self.refuse is not None:
            self.refusals += 1
            raise self.refuse
        if self.payload_limit is not None:
            size = submit_size(str(endpoint_id), tasks, task_group_id)
            if size > self.payload_limit:
                raise errors.PayloadTooLargeError(f"{size} bytes", http_status=413)
        ids = [wire.new_task_id() for _ in tasks]
        with self.lock:
            self.submits.append(tasks)
            self.submit_endpoints.append(str(endpoint_id))
            for task_id in ids:
                self.records[task_id] = {"task_id": task_id, "status": "received",
                                         "pending": True}
        return {"task_group_id": task_group_id, "task_ids": ids}

    def record(self, tasks: list[wire.TaskMessage]) -> None:
        """The direct path's records of `tasks` reached the broker."""
        with self.lock:
            for t in tasks:
                self.records.setdefault(t.task_id, {"task_id": t.task_id, "status": "received",
                                                    "pending": True})

    def finish(self, task_id: str, value: Any) -> None:
        """The task succeeded at the broker with `value` (REST polling will see it)."""
        self.records[task_id] = {"task_id": task_id, "status": "success", "pending": False,
                                 "result": serialize.serialize(value)}

    def task_record(self, task_id: str) -> dict[str, Any]:
        self._check_up()
        if task_id not in self.records:
            raise errors.NotFoundError(task_id, http_status=404)
        return self.records[task_id]

    def get_tasks(self, task_ids: list[str]) -> dict[str, Any]:
        self._check_up()
        self.polls += 1
        return {"tasks": {t: self.records[t] for t in task_ids if t in self.records},
                "unknown": [t for t in task_ids if t not in self.records]}

    def cancel(self, task_id: str) -> str:
        self._check_up()
        self.cancels.append(task_id)
        record = self.records[task_id]
        if record["pending"]:
            self.records[task_id] = {"task_id": task_id, "status": "cancelled",
                                     "pending": False}
        return str(self.records[task_id]["status"])

    def get_result_blob(self, task_id: str) -> bytes:
        raise errors.NotFoundError(task_id, http_status=404)


class FakeChannel:
    def __init__(self, stream: FakeStream):
        self._stream = stream
        self.closed = False
        self.woken = threading.Event()

    def deliveries(self, inactivity: float) -> Iterator[Delivery | None]:
        while not (self.closed or self.woken.is_set()):
            try:
                item = self._stream.inbox.get(timeout=inactivity)
            except queue.Empty:
                yield None
                continue
            if item is None:  # woken: the loop's condition ends it
                continue
            if isinstance(item, StreamError):  # the connection breaks now
                raise item
            yield item

    def ack(self, tag: int) -> None:
        self._stream.acked = max(self._stream.acked, tag)

    def wake(self) -> None:
        self.woken.set()
        self._stream.inbox.put(None)

    def close(self, ack: int = 0) -> None:
        if not self.closed and ack:
            self.ack(ack)
        self.closed = True


class FakeStream:
    """The group's result queue: `deliver` puts a message in it; `failures` are raised by the
    next connection attempts, one each."""

    def __init__(self) -> None:
        #: None: a wake (FakeChannel.wake), which only ends a wait.
        self.inbox: queue.Queue[Delivery | StreamError | None] = queue.Queue()
        self.failures: list[StreamError] = []
        self.opened: list[tuple[str, str, int]] = []
        self.acked = 0
        self._tag = 0
        #: If set, a connection opens only once this is set (AMQP's set-up across a WAN).
        self.gate: threading.Event | None = None

    def open(self, amqp_url: str, queue_name: str, prefetch: int) -> FakeChannel:
        if self.gate is not None:
            self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.opened.append((amqp_url, queue_name, prefetch))
        return FakeChannel(self)

    def deliver(self, results: list[wire.ResultMessage], sender: str = BROKER_ACCOUNT,
                msg_type: str = wire.MSG_RESULTS) -> None:
        self._tag += 1
        self.inbox.put(Delivery(self._tag, sender, msg_type, wire.encode_results(results)))

    def break_connection(self, error: StreamError) -> None:
        self.inbox.put(error)


class FakePublisher:
    """The direct path's publisher: keeps each published body; `fail` makes the next connect
    or publish raise DirectUnavailable; `confirm` (if given) runs as a tasks publish waits for its
    confirm, and may raise DirectUnavailable."""

    def __init__(self, exchange: str, routing_key: str, log: list[FakePublisher],
                 confirm: Callable[[], None] | None = None,
                 gate: threading.Event | None = None, api: FakeApi | None = None):
        self.exchange, self.routing_key = exchange, routing_key
        self.api = api  # if given, it records the tasks of the records published, as the broker
        self.tasks: list[bytes] = []
        self.records: list[bytes] = []
        self.fail: DirectUnavailable | None = None
        self.confirm = confirm
        self.gate = gate  # if given, `connect` returns once it is set (AMQP's set-up)
        log.append(self)

    def connect(self, amqp_url: str) -> None:
        if self.gate is not None:
            self.gate.wait()
        if self.fail is not None:
            raise self.fail

    def publish(self, amqp_url: str, body: bytes, records: bool = False) -> None:
        if self.fail is not None:
            raise self.fail
        if self.confirm is not None and not records:
            self.confirm()
        (self.records if records else self.tasks).append(body)
        if records and self.api is not None:
            self.api.record(wire.decode_tasks(body))

    def service(self) -> None:
        pass

    def close(self) -> None:
        pass


class Owner:
    """A future's Executor, as far as the futures of a bare PendingTable need one."""

    def __init__(self, table: PendingTable):
        self.table = table

    def _cancel(self, future: FnRelayFuture) -> bool:
        return bool(self.table.cancel_queued(future))

    def _result_blob(self, task_id: str) -> bytes:
        raise AssertionError("no blobs here")

    def _waiting_for(self, future: FnRelayFuture) -> str:
        return "its endpoint is not known here"


class FakeTransport:
    """A FakeStream and the FakePublishers made, as one `Transport` for an Executor."""

    def __init__(self) -> None:
        self.stream = FakeStream()
        self.publishers: list[FakePublisher] = []
        self.transport = Transport(
            results=self.stream,
            publishers=lambda exchange, key: FakePublisher(exchange, key, self.publishers))


def success(task_id: str, value: Any) -> wire.ResultMessage:
    return wire.ResultMessage(task_id=task_id, status="success",
                              result=serialize.serialize(value))


def remote_traceback(exc: BaseException) -> str:
    """A traceback as a worker formats one (it ends with the type and message)."""
    return ('Traceback (most recent call last):\n  File "remote.py", line 1, in task\n'
            f"{type(exc).__name__}: {exc}\n")


def failure(task_id: str, exc: BaseException) -> wire.ResultMessage:
    info = wire.ExceptionInfo(type=type(exc).__name__, message=str(exc),
                              traceback=remote_traceback(exc), serialized=serialize.serialize(exc))
    return wire.ResultMessage(task_id=task_id, status="failed", exception=info)
