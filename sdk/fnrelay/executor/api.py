"""The Executor: a concurrent.futures.Executor that runs calls on an fnrelay endpoint.

A thin API over parts with one job each, wired together here:

* ``submit`` serializes the call at once (so errors surface where the user made them and later
  mutation of the arguments does not leak in) and queues it in the pending table
  (`pending.PendingTable`, which also holds the rules that settle a future);
* the submitter thread (`submitter.Submitter`) batches queued calls into one message each:
  published straight to the endpoint's queue when the broker grants the direct path (an
  endpoint the user owns; see fnrelay.direct), else one POST /v1/submit;
* the result watcher thread (`watcher.ResultWatcher`) consumes this Executor's own task group
  queue over AMQP and settles the futures; when AMQP cannot be reached it polls the REST API;
* cancelling a future that was sent asks the broker (here).

The parts reach the outside only through `transport` (the REST client, the AMQP result stream,
the direct publisher), which the unit tests replace with in-memory fakes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from fnrelay import errors, wire
from fnrelay.client import Client, json_object, task_entry, uuid_text
from fnrelay.droplog import DropLog
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.group import TaskGroup
from fnrelay.executor.pending import PendingTable
from fnrelay.executor.submitter import Submitter
from fnrelay.executor.transport import AMQP, BrokerApi, Transport
from fnrelay.executor.watcher import Poller, ResultWatcher

#: The package's logger: its parts log as its children, so one level setting covers them.
log = logging.getLogger("fnrelay.executor")

RECORD_WAIT = 10.0  # seconds a cancel waits for a direct-path task's record at the broker
STARTED = frozenset({wire.TaskState.RUNNING.value}) | wire.TERMINAL_VALUES


class Executor(cf.Executor):
    """Run Python functions and ShellFunctions on ``endpoint_id`` with future semantics.

    Each Executor has its own task group and result queue, so two Executors never take each
    other's results. Use it as a context manager, or call shutdown().

    ``task_group_id`` re-attaches to an earlier Executor's group (e.g. after a notebook
    restart): ``reload_tasks()`` then returns futures for that group's tasks, results
    included. ``max_retries`` re-runs a task whose run is lost to infrastructure (worker or
    endpoint lost, node failure) up to that many times; the task's own exceptions never retry.
    ``direct`` (default on) uses the direct path where the broker grants it (an endpoint you
    own; see fnrelay.direct): tasks and results skip the broker's request and database on
    their way, which the broker records alongside. Off, or not granted, tasks go over REST.
    ``resource_specification`` and ``user_endpoint_config`` are JSON objects (string keys,
    finite numbers); anything else raises ValueError here.
    """

    def __init__(
        self,
        endpoint_id: str | uuid.UUID,
        client: Client | None = None,
        resource_specification: dict[str, Any] | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        batch_size: int = 128,
        task_group_id: str | None = None,
        max_retries: int | None = None,
        direct: bool = True,
        *,
        _transport: Transport = AMQP,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_retries is not None and (isinstance(max_retries, bool)
                                        or not isinstance(max_retries, int) or max_retries < 0):
            raise ValueError(f"max_retries must be a non-negative integer, not {max_retries!r}")
        self.endpoint_id = uuid_text("endpoint_id", endpoint_id)
        self.client = client or Client()
        self.max_retries = max_retries
        self.resource_specification = resource_specification  # checked by the setters
        self.user_endpoint_config = user_endpoint_config
        api: BrokerApi = self.client
        self._api, self._transport = api, _transport
        self._dropped = DropLog(log)  # messages not believed: one WARNING per interval
        self._pending = PendingTable(self._dropped)
        self._tg = TaskGroup(api, self.endpoint_id, str(task_group_id) if task_group_id else None,
                             direct)
        self._stop = threading.Event()
        self._poller = Poller(api, self._pending)
        self._submitter = Submitter(self._pending, api, self._tg, self._ensure_group,
                                    _transport.publishers, batch_size)
        self._watcher: ResultWatcher | None = None

    # --- public API ---------------------------------------------------------------------------
    @property
    def resource_specification(self) -> dict[str, Any]:
        """Applies to tasks submitted from now on; may be set between submits, as in Globus
        Compute (checked on every assignment)."""
        return self._resource_specification

    @resource_specification.setter
    def resource_specification(self, value: dict[str, Any] | None) -> None:
        self._resource_specification = json_object("resource_specification", value)

    @property
    def user_endpoint_config(self) -> dict[str, Any]:
        """Applies to tasks submitted from now on; may be set between submits."""
        return self._user_endpoint_config

    @user_endpoint_config.setter
    def user_endpoint_config(self, value: dict[str, Any] | None) -> None:
        self._user_endpoint_config = json_object("user_endpoint_config", value)

    @property
    def task_group_id(self) -> str | None:
        """This Executor's task group: the one given, else the broker's once it made one."""
        return self._tg.id

    @task_group_id.setter
    def task_group_id(self, value: str | None) -> None:
        self._tg.id = str(value) if value else None

    @property
    def direct(self) -> bool:
        """Whether tasks take the direct path where granted; cleared when the path fails (then
        REST from there on)."""
        return self._tg.direct

    @direct.setter
    def direct(self, value: bool) -> None:
        self._tg.direct = value

    @property
    def batch_size(self) -> int:
        """At most this many tasks go in one message or request."""
        return self._submitter.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._submitter.batch_size = value

    @property
    def amqp_connected(self) -> bool:
        """For diagnostics: the watcher streams results over AMQP (False while it polls)."""
        return self._watcher is not None and self._watcher.connected

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> FnRelayFuture:
        """Run ``fn(*args, **kwargs)`` on the endpoint; registers ``fn`` on first use."""
        self._check_open()  # before registering: no request to the broker for nothing
        function_id = self.client.register_function(fn)
        return self.submit_to_registered_function(function_id, args, kwargs)

    def submit_to_registered_function(
        self, function_id: str | uuid.UUID, args: tuple = (), kwargs: dict[str, Any] | None = None
    ) -> FnRelayFuture:
        """Run an already registered function."""
        entry = task_entry(function_id, tuple(args), kwargs or {}, self.resource_specification,
                           self.user_endpoint_config, self.max_retries)
        future = FnRelayFuture(self)
        with self._pending.lock:
            self._check_open()
            self._pending.put(future, entry)
            if not self._submitter.started:
                self._submitter.start()
        return future

    def reload_tasks(self) -> list[FnRelayFuture]:
        """Futures for every task of this Executor's task group (``task_group_id``), in
        submission order: finished ones resolve at once, the others when their results come."""
        if not self.task_group_id:
            raise ValueError("reload_tasks() needs Executor(..., task_group_id=...)")
        task_ids = self.client.get_task_group(self.task_group_id)["task_ids"]
        futures = self._pending.adopt(task_ids, lambda: FnRelayFuture(self))
        self._poller.poll_once()  # results recorded while nobody listened
        with self._pending.lock:
            self._ensure_group()  # re-declares the group's queue; the watcher takes the rest
        return futures

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``wait``, return when every future is done."""
        pending = self._pending
        with pending.lock:
            already = pending.closed
            pending.closed = True
            if cancel_futures:
                pending.cancel_unclaimed = True
                for future in pending.queued_futures():
                    future.cancel()
            if not already and self._submitter.started:
                pending.queue.put(None)  # the submitter flushes what is queued, then ends
        if wait:
            if self._submitter.started:
                self._submitter.join()
            cf.wait(pending.unresolved())
            self._stop.set()
            if self._watcher:
                self._watcher.join()

    # --- wiring ------------------------------------------------------------------------------
    @property
    def _lock(self) -> threading.RLock:
        """The pending table's lock: holding it keeps the submitter from taking queued work."""
        return self._pending.lock

    @property
    def _group(self) -> dict[str, Any] | None:
        """The broker's answer about this Executor's task group (None until it has one)."""
        return self._tg.info

    def _check_open(self) -> None:
        if self._pending.closed:
            raise RuntimeError("cannot submit after shutdown")

    def _ensure_group(self) -> dict[str, Any]:
        """Create this Executor's task group (and start its watcher) before the first submit."""
        info = self._tg.info
        if info is not None:
            return info
        info = self._tg.attach()
        self._watcher = ResultWatcher(self._pending, self._tg, self._transport.results,
                                      self._poller, self._api, self._stop, self._dropped)
        self._watcher.start()
        return info

    def _result_blob(self, task_id: str) -> bytes:
        return self.client.get_result_blob(task_id)

    # --- cancellation ------------------------------------------------------------------------
    def _cancel(self, future: FnRelayFuture) -> bool:
        local = self._pending.cancel_queued(future)
        if local is not None:
            return local
        future._submitted.wait()
        if future.task_id is None or future.done():
            return future.cancelled()
        try:
            if self._recorded_status(future.task_id) in STARTED:
                return False
            status = self.client.cancel(future.task_id)
        except errors.FnRelayError as e:
            log.info("could not cancel task %s: %s", future.task_id, e)
            return False
        if status != wire.TaskState.CANCELLED.value:
            return False
        self._pending.forget(future.task_id)
        return cf.Future.cancel(future)

    def _recorded_status(self, task_id: str) -> str:
        """The task's status at the broker. A direct-path task is recorded a moment after it
        was published (the broker batches those records): wait up to RECORD_WAIT for it."""
        deadline = time.monotonic() + RECORD_WAIT
        while True:
            try:
                return str(self.client.get_task(task_id)["status"])
            except errors.NotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
