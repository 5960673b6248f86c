"""A concurrent.futures.Executor that runs calls on an fnrelay endpoint.

Three pieces, each on its own thread where it needs one:

* ``submit`` serializes the call at once (so errors surface where the user made them and later
  mutation of the arguments does not leak in) and queues it;
* the submitter thread batches queued calls (flush at ``batch_size`` or after a few idle
  milliseconds) into one message each: published straight to the endpoint's queue when the
  broker grants the direct path (an endpoint the user owns; see fnrelay.direct), else one
  POST /v1/submit;
* the result watcher consumes this Executor's own task group queue over AMQP and resolves the
  futures; when AMQP cannot be reached it polls the REST API instead.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions

from fnrelay import backoff, blobs, chunks, errors, serialize, wire
from fnrelay.amqp import connection_parameters
from fnrelay.client import Client, json_object, submit_size, task_entry, uuid_text
from fnrelay.direct import (
    DirectPublisher,
    DirectUnavailable,
    Records,
    message_runs,
    task_messages,
    too_large,
    within_at_once,
)
from fnrelay.droplog import DropLog
from fnrelay.library_logs import reports_its_own_errors
from fnrelay.results import outcome

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 4_000_000  # keep each request well below the broker's payload limit
POLL_MIN, POLL_MAX = 0.2, 2.0  # REST polling interval bounds (fallback mode)
SAFETY_POLL = 15.0  # with AMQP, poll REST after this long without any result message
#: Senders of a task group's messages, as `Executor._sender` tells them apart.
_BROKER, _ENDPOINT = "broker", "endpoint"
RECORD_WAIT = 10.0  # seconds a cancel waits for a direct-path task's record at the broker
IDLE_SERVICE = 5.0  # the submitter answers AMQP heartbeats this often while idle
PREFETCH = 50  # result messages RabbitMQ may push to the Executor unacknowledged
ACK_EVERY = PREFETCH // 2  # result messages acknowledged together (and whenever idle)
#: AMQP reconnect delays (seconds): exponential from the first, capped, with jitter.
RECONNECT_BASE, RECONNECT_CAP = 1.0, 60.0


STARTED = frozenset({wire.TaskState.RUNNING.value}) | wire.TERMINAL_VALUES


class _Success:
    """A not-yet-deserialized result value (deserialized on first .result(); a result blob is
    fetched then too, so the watcher thread never waits for a download)."""

    __slots__ = ("data",)

    def __init__(self, data: str | None):
        self.data = data


class FnRelayFuture(cf.Future):
    """A Future for one task. ``task_id`` is set once the broker has accepted the task."""

    def __init__(self, executor: Executor):
        super().__init__()
        self.task_id: str | None = None
        self._executor = executor
        self._claimed = False  # taken by the submitter: can no longer be cancelled locally
        self._submitted = threading.Event()  # set when the submit request has finished
        self._value_lock = threading.Lock()
        #: Published straight to the endpoint: the one task whose result may come from the
        #: endpoint's account rather than the broker's.
        self._direct = False

    def cancel(self) -> bool:
        """True only if the task has not started (and now never will)."""
        return self._executor._cancel(self)

    def result(self, timeout: float | None = None) -> Any:
        value = super().result(timeout)
        if isinstance(value, _Success):
            with self._value_lock:  # deserialize once, even with concurrent readers
                if isinstance(self._result, _Success):
                    data = blobs.resolve(self.task_id or "", value.data,
                                         self._executor.client.get_result_blob)
                    self._result = serialize.deserialize(data) if data is not None else None
                value = self._result
        return value

    def _resolve(self, ok: bool, value: Any) -> None:
        """Finish the future unless it already is (e.g. cancelled meanwhile)."""
        try:
            if isinstance(value, errors.TaskCancelled):
                cf.Future.cancel(self)
            elif ok:
                self.set_result(value)
            else:
                self.set_exception(value)
        except cf.InvalidStateError:
            pass


#: Queued calls taken for sending: each future with its submit entry.
Chunk = list[tuple[FnRelayFuture, dict[str, Any]]]


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
        self.batch_size = batch_size
        self.task_group_id: str | None = str(task_group_id) if task_group_id else None
        self._group: dict[str, Any] | None = None
        self._queue: queue.Queue[FnRelayFuture | None] = queue.Queue()
        self._entries: dict[int, dict[str, Any]] = {}  # id(future) -> task entry, until sent
        self._lock = threading.RLock()
        self._outstanding: dict[str, FnRelayFuture] = {}  # task_id -> submitted, unresolved
        self._early: dict[str, wire.ResultMessage] = {}  # results that beat their task id
        self._shutdown = False
        self._stop = threading.Event()
        self._submitter: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._inflight = 0  # submit requests under way
        self.amqp_connected = False  # for diagnostics: the watcher streams over AMQP
        self._reconnects = 0  # failed AMQP connection attempts in a row
        self._broker_down = False  # the last REST poll failed (warned once per outage)
        self.direct = direct  # cleared when the direct path fails: then REST from there on
        self._publisher: DirectPublisher | None = None  # the submitter thread's alone
        self._records = Records()  # the broker's copies of direct-path tasks, sent batched
        self._dropped = DropLog(log)  # messages not believed: one WARNING per interval

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
        with self._lock:
            self._check_open()
            self._entries[id(future)] = entry
            self._start_threads()
            self._queue.put(future)
        return future

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")

    def reload_tasks(self) -> list[FnRelayFuture]:
        """Futures for every task of this Executor's task group (``task_group_id``), in
        submission order: finished ones resolve at once, the others when their results come."""
        if not self.task_group_id:
            raise ValueError("reload_tasks() needs Executor(..., task_group_id=...)")
        task_ids = self.client.get_task_group(self.task_group_id)["task_ids"]
        futures = []
        with self._lock:
            for task_id in task_ids:
                future = self._outstanding.get(task_id)
                if future is None:
                    future = FnRelayFuture(self)
                    future.task_id, future._claimed = task_id, True
                    future._submitted.set()
                    self._outstanding[task_id] = future
                futures.append(future)
        self._poll_once()  # results recorded while nobody listened
        with self._lock:
            self._ensure_group()  # re-declares the group's queue; the watcher takes the rest
        return futures

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``wait``, return when every future is done."""
        with self._lock:
            already = self._shutdown
            self._shutdown = True
            if cancel_futures:
                for future in self._queued_futures():
                    future.cancel()
            if not already and self._submitter:
                self._queue.put(None)  # the submitter flushes what is queued, then ends
        if wait:
            if self._submitter:
                self._submitter.join()
            cf.wait(self._all_unresolved())
            self._stop.set()
            if self._watcher:
                self._watcher.join()

    # --- threads -----------------------------------------------------------------------------
    def _start_threads(self) -> None:
        if self._submitter is None:
            self._submitter = threading.Thread(
                target=self._submit_loop, name="fnrelay-submitter", daemon=True
            )
            self._submitter.start()

    def _ensure_group(self) -> None:
        """Create this Executor's task group (and start its watcher) before the first submit."""
        if self._group is not None:
            return
        self._group = self._create_group()
        self.task_group_id = self._group["task_group_id"]
        self._watcher = threading.Thread(
            target=self._watch_loop, name="fnrelay-result-watcher", daemon=True
        )
        self._watcher.start()

    def _create_group(self) -> dict[str, Any]:
        """Create or re-attach to the task group, asking for the direct path if wanted."""
        return self.client.create_task_group(
            self.task_group_id, self.endpoint_id if self.direct else None)

    def _submit_loop(self) -> None:
        reports_its_own_errors()  # a lost direct path is one WARNING, not pika's ERRORs
        try:
            self._submit_until_done()
        finally:
            self._send_records()
            if self._publisher is not None:
                self._publisher.close()

    def _next_queued(self) -> FnRelayFuture | None:
        """The next queued future (None: shut down), sending the broker's records when due and
        answering AMQP heartbeats meanwhile."""
        while True:
            try:
                return self._queue.get(timeout=self._records.wait(IDLE_SERVICE))
            except queue.Empty:
                if self._records.ready():
                    self._send_records()
                elif self._publisher is not None:
                    self._publisher.service()

    def _send_records(self) -> None:
        """Send the broker its records of the direct-path tasks published so far. If that
        fails, the endpoint's copies of their results carry the records instead."""
        tasks = self._records.take()
        if not tasks or self._publisher is None or self._group is None:
            return
        try:
            self._publisher.publish(self._group["amqp_url"], wire.encode_tasks(tasks),
                                    records=True)
        except DirectUnavailable as e:
            log.warning("could not send the broker its records of %d task(s) (%s); it records "
                        "them from their results", len(tasks), e)

    def _submit_until_done(self) -> None:
        done = False
        while not done:
            first = self._next_queued()
            if first is None:
                break
            # Send at once what is queued now, without waiting for more: while this request is
            # in flight, later submissions pile up and go in the next one. So a lone task pays
            # no batching delay and a burst is still sent in few requests.
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            self._send(batch)
            if self._records.ready():
                self._send_records()

    def _send(self, batch: list[FnRelayFuture]) -> None:
        with self._lock:  # from here on a future is cancelled through the broker
            live = []
            for future in batch:
                entry = self._entries.pop(id(future), None)
                if future.cancelled() or entry is None:
                    future._submitted.set()
                    continue
                future._claimed = True
                live.append((future, entry))
        for chunk in _chunks(live, MAX_BATCH_BYTES):
            self._send_chunk(chunk)

    def _send_chunk(self, chunk: Chunk) -> None:
        with self._lock:
            self._inflight += 1
        try:
            self._ensure_group()
            chunk = self._send_direct(chunk)
            if not chunk:
                self._done_inflight()
                return
            answer = self.client.submit(
                self.endpoint_id, [entry for _, entry in chunk], self.task_group_id
            )
        except errors.PayloadTooLargeError as e:
            self._done_inflight()
            if len(chunk) > 1:  # the broker's limit is lower than ours: halve and retry
                half = len(chunk) // 2
                self._send_chunk(chunk[:half])
                self._send_chunk(chunk[half:])
                return
            self._fail(chunk, e)
            return
        except Exception as e:  # noqa: BLE001 - the futures must learn why
            self._done_inflight()
            self._fail(chunk, e)
            return
        early = []
        with self._lock:
            for (future, _), task_id in zip(chunk, answer["task_ids"], strict=True):
                future.task_id = task_id
                self._outstanding[task_id] = future
                if task_id in self._early:
                    early.append(self._early.pop(task_id))
            self._done_inflight()
        self._take_all(early)
        for future, _ in chunk:
            future._submitted.set()

    def _send_direct(self, chunk: Chunk) -> Chunk:
        """Publish the chunk straight to the endpoint (the direct path); returns what is left
        for REST: all of it if the path is not granted, else what a failed publish left."""
        assert self._group is not None
        grant = self._group.get("submit")
        if not (self.direct and grant):
            return chunk
        bodies = [self.client.function_body(e["function_id"]) for _, e in chunk]
        if None in bodies:  # registered elsewhere: only the broker has the code
            return chunk
        ids = [wire.new_task_id() for _ in chunk]
        msgs = task_messages([e for _, e in chunk], ids, bodies,  # type: ignore[arg-type]
                             str(self.task_group_id))
        body = wire.encode_tasks(msgs)
        limit = grant.get("payload_limit")  # None: an older broker
        if limit is None or within_at_once(
                len(body), submit_size(self.endpoint_id, [], self.task_group_id), limit):
            return [] if self._publish_direct(grant, chunk, msgs, body) else chunk
        return self._publish_limited(grant, chunk, msgs, limit)

    def _publish_limited(self, grant: dict[str, Any], chunk: Chunk,
                         msgs: list[wire.TaskMessage], limit: int) -> Chunk:
        """A chunk near the broker's payload limit: fail each task whose REST request alone
        would exceed it (REST would refuse it), publish the others in messages within it.
        Returns what is left for REST."""
        fits = []
        for item, msg in zip(chunk, msgs, strict=True):
            size = submit_size(self.endpoint_id, [item[1]], self.task_group_id)
            if size > limit:
                self._fail([item], too_large(size, limit))
            else:
                fits.append((item, msg))
        for run in message_runs([msg for _, msg in fits], limit):
            part = [msg for _, msg in fits[run]]
            if not self._publish_direct(grant, [item for item, _ in fits[run]], part,
                                        wire.encode_tasks(part)):
                return [item for item, _ in fits[run.start:]]
        return []

    def _publish_direct(self, grant: dict[str, Any], chunk: Chunk,
                        msgs: list[wire.TaskMessage], body: bytes) -> bool:
        """Publish one `tasks` message; False if it failed before anything went out (the
        direct path is then off: REST from now on)."""
        assert self._group is not None
        with self._lock:  # results may come back before the publish returns
            for (future, _), msg in zip(chunk, msgs, strict=True):
                future.task_id = msg.task_id
                future._direct = True
                self._outstanding[msg.task_id] = future
        if self._publisher is None:
            self._publisher = DirectPublisher(grant["exchange"], grant["routing_key"])
        try:
            self._publisher.publish(self._group["amqp_url"], body)
        except DirectUnavailable as e:
            self.direct = False
            log.warning("direct path to endpoint %s unavailable (%s); submitting over REST "
                        "from now on%s", self.endpoint_id, e,
                        " (these tasks may run twice)" if e.sent else "")
            with self._lock:
                for (future, _), msg in zip(chunk, msgs, strict=True):
                    self._outstanding.pop(msg.task_id, None)
                    future.task_id = None
                    future._direct = False
            return False
        self._records.add(msgs)
        for future, _ in chunk:
            future._submitted.set()
        return True

    def _done_inflight(self) -> None:
        with self._lock:
            self._inflight -= 1
            if not self._inflight:
                self._early.clear()  # whatever is left was not ours to wait for

    def _fail(self, chunk: Chunk, exc: BaseException) -> None:
        for future, _ in chunk:
            future._resolve(False, exc)
            future._submitted.set()

    # --- results -----------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        """Stream results over AMQP while it works; poll REST while it does not."""
        assert self._group is not None
        reports_its_own_errors()  # an outage is one WARNING each (_fallback, _broker_down)
        last_result = time.monotonic()
        while not self._stop.is_set() and not self._finished():
            try:
                last_result = self._consume(self._group["amqp_url"], self._group["queue"])
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code == 404:  # the queue expired: ask the broker to re-declare it
                    self._reattach()
                else:
                    self._fallback(e)
            except (pika.exceptions.ProbableAuthenticationError,
                    pika.exceptions.ProbableAccessDeniedError) as e:
                # The group's reader password is reset whenever someone attaches to the group
                # (another Executor on it): ask the broker for a fresh one.
                log.info("result reader refused by RabbitMQ (%s); re-attaching", e)
                self._reattach()
                self._stop.wait(1.0)
            except (pika.exceptions.AMQPError, OSError) as e:
                self._fallback(e)
                last_result = time.monotonic()
            if time.monotonic() - last_result > SAFETY_POLL:
                self._poll_once()

    def _fallback(self, error: BaseException) -> None:
        delay = backoff.delay(self._reconnects, RECONNECT_BASE, RECONNECT_CAP)
        # Once per outage at WARNING (a user waiting on futures should know why), then INFO.
        level = logging.WARNING if self._reconnects == 0 and self._group else logging.INFO
        self._reconnects += 1
        log.log(level, "result stream from RabbitMQ at %s unavailable (%s); polling the broker "
                "at %s meanwhile, reconnecting in %.1fs; pending futures resolve when either "
                "answers", _host_of(self._group["amqp_url"]) if self._group else "?",
                str(error) or type(error).__name__, self.client.broker_url, delay)
        self.amqp_connected = False
        self._poll_for(delay)

    def _reattach(self) -> None:
        try:
            self._group = self._create_group()
        except errors.FnRelayError as e:
            self._fallback(e)
            return
        self._poll_once()  # results forwarded while the queue was gone were dropped

    def _consume(self, amqp_url: str, queue_name: str) -> float:
        """Consume the group queue until stopped; returns when the safety poll is due."""
        params = connection_parameters(amqp_url)
        params.socket_timeout = 5
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=PREFETCH)
            self.amqp_connected = True
            if self._reconnects:
                log.info("result stream from RabbitMQ at %s is back", _host_of(amqp_url))
            self._reconnects = 0
            last = time.monotonic()
            # Acks go out together, every ACK_EVERY messages and whenever the queue is quiet:
            # one ack per result is one more frame for RabbitMQ and this process in each
            # call. Unacked results come again after a reconnect, and a second one is ignored.
            unacked, last_tag = 0, 0
            for method, props, body in channel.consume(queue_name, inactivity_timeout=0.2):
                if self._stop.is_set():
                    break
                if method is None:
                    if unacked:
                        channel.basic_ack(last_tag, multiple=True)
                        unacked = 0
                    if self._finished():
                        break
                    if self._outstanding and time.monotonic() - last > SAFETY_POLL:
                        break
                    continue
                last = time.monotonic()
                sender = self._sender(props)
                if sender is None:
                    pass
                elif props.type == wire.MSG_RESULTS:
                    try:
                        results = wire.decode_results(body)
                    except (ValueError, KeyError, TypeError) as e:
                        self._dropped.note(f"a malformed results message ({e})")
                        results = []
                    self._take_all(results, via_endpoint=sender == _ENDPOINT)
                unacked, last_tag = unacked + 1, method.delivery_tag
                if unacked >= ACK_EVERY:
                    channel.basic_ack(last_tag, multiple=True)
                    unacked = 0
            try:
                if unacked:
                    channel.basic_ack(last_tag, multiple=True)
                channel.cancel()
            except pika.exceptions.AMQPError:
                pass
            return last
        finally:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                pass

    def _sender(self, props: Any) -> str | None:
        """Who sent the message: _BROKER, _ENDPOINT (the direct path's), or None for anyone
        else (dropped). RabbitMQ validates `user_id`; the broker lists who may send, its own
        account first (older brokers list nobody: then everything counts as the broker's)."""
        senders = (self._group or {}).get("result_senders")
        if senders is None or props.user_id == senders[0]:
            return _BROKER
        if props.user_id in senders[1:]:
            return _ENDPOINT
        self._dropped.note(f"a {props.type!r} message from RabbitMQ user {props.user_id!r} "
                           f"(expected one of {', '.join(senders)})")
        return None

    def _take(self, result: wire.ResultMessage,
              via_endpoint: bool = False) -> Callable[[], None] | None:
        """Match a result to its future (caller holds the lock); returns how to resolve it.

        A result the endpoint sent itself settles only a task this Executor published to
        that endpoint: anything else the endpoint's account says is not believed (the broker
        checked the result of every other task). Futures are resolved after the lock is
        released, so callbacks may use the Executor.
        """
        if via_endpoint:
            future = self._outstanding.get(result.task_id)
            if future is None or not future._direct:
                if future is not None:
                    self._dropped.note(f"the endpoint's result for task {result.task_id}, "
                                       "which was not sent to it directly")
                return None
        future = self._outstanding.pop(result.task_id, None)
        if future is None:
            if self._inflight:  # its submit answer may still be on the way
                self._early[result.task_id] = result
            return None  # else a duplicate, or a task cancelled here
        return lambda: self._settle(future, result)

    @staticmethod
    def _settle(future: FnRelayFuture, result: wire.ResultMessage) -> None:
        if result.status == wire.TaskState.SUCCESS.value:
            outcome(result.task_id, result.status, None, None, result.details)  # version check
            future._resolve(True, _Success(result.result))
            return
        ok, value = outcome(
            result.task_id, result.status, result.result, result.exception, result.details
        )
        future._resolve(ok, value)

    def _take_all(self, results: list[wire.ResultMessage],
                  via_endpoint: bool = False) -> None:
        with self._lock:
            actions = [a for r in results if (a := self._take(r, via_endpoint))]
        for action in actions:
            action()

    def _poll_for(self, seconds: float) -> None:
        """Poll REST for `seconds` (backing off while nothing changes)."""
        deadline = time.monotonic() + seconds
        interval = POLL_MIN
        while not self._stop.is_set() and time.monotonic() < deadline and not self._finished():
            changed = self._poll_once()
            interval = POLL_MIN if changed else min(interval * 2, POLL_MAX)
            self._stop.wait(interval)

    def _poll_once(self) -> bool:
        with self._lock:
            task_ids = list(self._outstanding)
        changed = False
        for start in range(0, len(task_ids), 1000):
            try:
                answer = self.client.get_tasks(task_ids[start:start + 1000])
            except errors.FnRelayError as e:
                log.log(logging.INFO if self._broker_down else logging.WARNING,
                        "cannot poll the broker at %s for results (%s); trying again",
                        self.client.broker_url, e)
                self._broker_down = True
                return changed
            if self._broker_down:
                log.info("the broker at %s answers again", self.client.broker_url)
                self._broker_down = False
            done = [wire.ResultMessage.from_dict(r) for r in answer["tasks"].values()
                    if not r["pending"]]
            changed = changed or bool(done)
            self._take_all(done)
        return changed

    # --- cancellation ------------------------------------------------------------------------
    def _cancel(self, future: FnRelayFuture) -> bool:
        with self._lock:
            if future.done():
                return future.cancelled()
            local = not future._claimed
            if local:  # still queued here: without its entry the submitter skips it
                self._entries.pop(id(future), None)
        if local:
            return cf.Future.cancel(future)
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
        with self._lock:
            self._outstanding.pop(future.task_id, None)
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

    def _finished(self) -> bool:
        """Shut down, everything sent, nothing left to wait for: the watcher may end."""
        with self._lock:
            return (
                self._shutdown and not self._outstanding and not self._inflight
                and self._queue.empty() and not self._entries
            )

    # --- helpers -----------------------------------------------------------------------------
    def _queued_futures(self) -> list[FnRelayFuture]:
        return [f for f in list(self._queue.queue) if f is not None]

    def _all_unresolved(self) -> list[FnRelayFuture]:
        with self._lock:
            return [f for f in self._queued_futures() if not f.done()] + list(
                self._outstanding.values()
            )


def _chunks(items: Chunk, max_bytes: int) -> list[Chunk]:
    """Split a batch so that no request carries much more than `max_bytes` of payload."""
    return [items[run] for run in chunks.by_size([len(e["payload"]) for _, e in items], max_bytes)]


def _host_of(amqp_url: str) -> str:
    """host:port of an AMQP URL, for messages: never its user name or password."""
    parsed = urlsplit(amqp_url)
    return f"{parsed.hostname}:{parsed.port or (5671 if parsed.scheme == 'amqps' else 5672)}"
