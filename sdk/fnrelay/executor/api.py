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
from collections.abc import Callable, Iterable
from typing import Any

from fnrelay import errors, wire
from fnrelay.client import Client, json_object, task_entry, uuid_text
from fnrelay.droplog import DropLog
from fnrelay.executor import options
from fnrelay.executor.endpoints import EndpointStates
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.group import TaskGroup
from fnrelay.executor.pending import PendingTable
from fnrelay.executor.registry import FunctionRegistry
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

    The keywords and their order are Globus Compute's. ``endpoint_id`` may be given later
    (``ex.endpoint_id = ...``) and changed between submits; submitting without one is a
    ValueError. ``task_group_id`` re-attaches to an earlier Executor's group (e.g. after a
    notebook restart): ``reload_tasks()`` then returns futures for that group's tasks, results
    included. ``label`` names the Executor in its repr; ``amqp_port`` replaces the port of the
    result stream's URL. ``api_burst_limit``, ``api_burst_window_s``, ``serializer`` and
    ``result_serializers`` are accepted with a warning (`UnusedOption`) that they have no
    effect here. ``resource_specification`` and ``user_endpoint_config`` are JSON objects
    (string keys, finite numbers); anything else raises ValueError here.

    fnrelay's own, keyword-only: ``max_retries`` re-runs a task whose run is lost to
    infrastructure (worker or endpoint lost, node failure) up to that many times; the task's
    own exceptions never retry. ``direct`` (default on) uses the direct path where the broker
    grants it (an endpoint you own; see fnrelay.direct): tasks and results skip the broker's
    request and database on their way, which the broker records alongside. Off, or not
    granted, tasks go over REST.
    """

    def __init__(
        self,
        endpoint_id: str | uuid.UUID | None = None,
        client: Client | None = None,
        task_group_id: str | uuid.UUID | None = None,
        resource_specification: dict[str, Any] | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        label: str = "",
        batch_size: int = 128,
        amqp_port: int | None = None,
        api_burst_limit: int | None = None,
        api_burst_window_s: int | None = None,
        serializer: Any = None,
        result_serializers: Iterable[Any] | None = None,
        *,
        max_retries: int | None = None,
        direct: bool = True,
        _transport: Transport = AMQP,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_retries is not None and (isinstance(max_retries, bool)
                                        or not isinstance(max_retries, int) or max_retries < 0):
            raise ValueError(f"max_retries must be a non-negative integer, not {max_retries!r}")
        self.endpoint_id = endpoint_id  # checked by the setter
        self.client = client or Client()
        self.label = label
        self.max_retries = max_retries
        self.resource_specification = resource_specification  # checked by the setters
        self.user_endpoint_config = user_endpoint_config
        # Globus Compute's keywords that do nothing here: kept as given, and said so.
        self.api_burst_limit, self.api_burst_window_s = api_burst_limit, api_burst_window_s
        self._serializer, self._result_serializers = serializer, result_serializers
        for name, value in (("api_burst_limit", api_burst_limit),
                            ("api_burst_window_s", api_burst_window_s),
                            ("serializer", serializer), ("result_serializers", result_serializers)):
            options.notice(name, value)
        api: BrokerApi = self.client
        self._api, self._transport = api, _transport
        self._dropped = DropLog(log)  # messages not believed: one WARNING per interval
        self._pending = PendingTable(self._dropped)
        self._tg = TaskGroup(api, None, str(task_group_id) if task_group_id else None, direct)
        self.amqp_port = amqp_port  # checked by the setter
        self._functions = FunctionRegistry()
        self._stop = threading.Event()
        self._poller = Poller(api, self._pending)
        self._endpoints = EndpointStates(api)
        self._submitter = Submitter(self._pending, api, self._tg, self._ensure_group,
                                    _transport.publishers, batch_size)
        self._watcher: ResultWatcher | None = None

    def __repr__(self) -> str:
        parts = [self.label, self.endpoint_id and f"endpoint {self.endpoint_id}",
                 self.task_group_id and f"task group {self.task_group_id}"]
        return f"{type(self).__name__}<{'; '.join(p for p in parts if p)}>"

    # --- public API ---------------------------------------------------------------------------
    @property
    def endpoint_id(self) -> str | None:
        """Where tasks submitted from now on go (as text); None until set. May be set after
        construction and changed between submits, as in Globus Compute."""
        return self._endpoint_id

    @endpoint_id.setter
    def endpoint_id(self, value: str | uuid.UUID | None) -> None:
        self._endpoint_id = None if value is None else uuid_text("endpoint_id", value)

    @property
    def amqp_port(self) -> int | None:
        """The port the result stream connects to; None: the one in the broker's AMQP URL."""
        return self._tg.amqp_port

    @amqp_port.setter
    def amqp_port(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 < value < 65536):
            raise ValueError(f"amqp_port must be a port number (1-65535) or None, not {value!r}")
        self._tg.amqp_port = value

    @property
    def serializer(self) -> Any:
        """Kept as given; fnrelay serializes with its own strategies (see fnrelay.serialize)."""
        return self._serializer

    @serializer.setter
    def serializer(self, value: Any) -> None:
        options.notice("serializer", value)
        self._serializer = value

    @property
    def result_serializers(self) -> Iterable[Any] | None:
        """Kept as given; results come back in fnrelay's own serialization."""
        return self._result_serializers

    @result_serializers.setter
    def result_serializers(self, value: Iterable[Any] | None) -> None:
        options.notice("result_serializers", value)
        self._result_serializers = value

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
    def task_group_id(self, value: str | uuid.UUID | None) -> None:
        text = str(value) if value else None
        if self._tg.info is not None and text != self._tg.id:
            raise ValueError(
                f"this Executor already reads task group {self._tg.id}; an Executor reads one "
                f"group: use a new Executor(task_group_id={text!r}) for another")
        self._tg.id = text

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
        endpoint_id = self._check_endpoint()
        function_id = self._functions.get(fn)
        if function_id is None:
            # The task group (and the result stream's connection) need not wait for the
            # registration: the submitter attaches it meanwhile, one round trip fewer.
            self._start_submitter(endpoint_id)
            # Not register_function: another thread's first submit of `fn` may record it
            # meanwhile, which is no mistake here; the id recorded first wins.
            function_id = self._functions.add(fn, self.client.register_function(fn))
        return self.submit_to_registered_function(function_id, args, kwargs)

    def submit_to_registered_function(
        self, function_id: str | uuid.UUID, args: tuple | None = (),
        kwargs: dict[str, Any] | None = None,
    ) -> FnRelayFuture:
        """Run an already registered function."""
        endpoint_id = self._check_endpoint()
        entry = task_entry(function_id, tuple(args or ()), kwargs or {},
                           self.resource_specification, self.user_endpoint_config,
                           self.max_retries)
        self._endpoints.watch([endpoint_id])  # its first status: the Python versions it runs
        future = FnRelayFuture(self)
        future._endpoint_id = endpoint_id
        with self._pending.lock:
            self._check_open()
            self._pending.put(future, entry)
            self._start_submitter()
        return future

    def register_function(self, fn: Callable[..., Any], function_id: str | uuid.UUID | None = None,
                          **register_kwargs: Any) -> str:
        """Register ``fn`` for this Executor's submits and return its function id, as Globus
        Compute's does: ``function_id`` binds ``fn`` to an id registered before (no request);
        other keywords go to ``Client.register_function``. ``fn`` registered here already is
        a ValueError, unless ``function_id`` names the same id (a mistake caught where it is
        made, instead of tasks running another function than the one meant)."""
        self._check_open()
        cached = self._functions.get(fn)
        wanted = None if function_id is None else str(function_id)
        if cached is not None:
            if wanted == cached:
                return cached
            raise ValueError(f"{getattr(fn, '__name__', fn)!r} is already registered with this "
                             f"Executor as function {cached}"
                             + (f" (asked to register it as {wanted})" if wanted else ""))
        if wanted is None:
            wanted = self.client.register_function(fn, **register_kwargs)
        return self._functions.add(fn, wanted)

    def register_source_code(self, source: str, function_name: str,
                             **register_kwargs: Any) -> str:
        """Register Python source text whose function `function_name` is the entry point
        (``Client.register_source_code``); submit to it with
        ``submit_to_registered_function``."""
        self._check_open()
        return str(self.client.register_source_code(source, function_name, **register_kwargs))

    def get_worker_hardware_details(self) -> str:
        """A report of the hardware a worker of this Executor's endpoint sees, as Globus
        Compute's Executor gives it (a task like any other: it waits for a worker)."""
        from fnrelay.hardware import run_hardware_report
        return str(self.submit(run_hardware_report).result())

    def reload_tasks(self, task_group_id: str | uuid.UUID | None = None) -> list[FnRelayFuture]:
        """Futures for every task of this Executor's task group (``task_group_id``, or the one
        given here), in submission order: finished ones resolve at once, the others when their
        results come."""
        if task_group_id is not None:
            self.task_group_id = task_group_id
        if not self.task_group_id:
            raise ValueError("reload_tasks() needs a task group: reload_tasks(task_group_id=...) "
                             "or Executor(..., task_group_id=...)")
        task_ids = self.client.get_task_group(self.task_group_id)["task_ids"]
        futures = self._pending.adopt(task_ids, lambda: FnRelayFuture(self))
        self._poller.poll_once()  # results recorded while nobody listened
        with self._pending.lock:
            # Re-declares the group's queue; the watcher takes the rest.
            self._ensure_group(self.endpoint_id)
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
                self._watcher.wake()
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

    def _start_submitter(self, attach_for: str | None = None) -> None:
        """Start the submitter thread once; `attach_for`: it attaches the task group for that
        endpoint first, before any task is queued."""
        with self._pending.lock:
            if not self._submitter.started:
                self._submitter.start(attach_for)

    def _check_endpoint(self) -> str:
        if self.endpoint_id is None:
            raise ValueError("no endpoint_id set: give Executor(endpoint_id=...) or set "
                             "ex.endpoint_id = ... before submitting")
        return self.endpoint_id

    def _ensure_group(self, endpoint_id: str | None) -> dict[str, Any]:
        """Create this Executor's task group (and start its watcher) before the first submit;
        the direct path is asked for `endpoint_id`, where that submit goes."""
        info = self._tg.info
        if info is not None:
            return info
        if self._tg.endpoint_id is None:
            self._tg.endpoint_id = endpoint_id
        info = self._tg.attach()
        self._watcher = ResultWatcher(self._pending, self._tg, self._transport.results,
                                      self._poller, self._api, self._stop, self._dropped,
                                      self._endpoints)
        self._watcher.start()
        return info

    def _result_blob(self, task_id: str) -> bytes:
        return self.client.get_result_blob(task_id)

    def _waiting_for(self, future: FnRelayFuture) -> str:
        return self._endpoints.describe(future._endpoint_id)

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
                return str(self.client.task_record(task_id)["status"])
            except errors.NotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
