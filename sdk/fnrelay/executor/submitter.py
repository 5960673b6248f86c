"""The submitter: one thread per Executor that sends queued calls to the broker or endpoint.

It takes what is queued (up to `batch_size`), splits it by bytes (MAX_BATCH_BYTES) and sends
each part: published straight to the endpoint's queue when the broker granted the direct path
(fnrelay.direct), else as one POST /v1/submit; a refused part fails its futures with the
reason. A burst's direct-path messages are in flight together, their confirms awaited by
publish lanes (fnrelay.executor.lanes); a lone call's message is published by this thread.
Direct-path tasks' records go to the broker batched (`fnrelay.direct.Records`); while idle the
thread answers the direct publisher's AMQP heartbeats.

The direct path's connection opens on a thread of its own as soon as the group has the grant,
and tasks go over REST until it is open: the HTTP connection the group's request used is open
already, so a fresh process's first call reaches its endpoint without waiting out AMQP's
connection set-up (12 one-way crossings; docs/performance.md, round 18). On one machine the
broker's longer way costs that first call some 25 ms more than the set-up would have.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from fnrelay import chunks, errors, wire
from fnrelay.client import submit_size
from fnrelay.direct import (
    DirectUnavailable,
    Records,
    message_runs,
    task_messages,
    too_large,
    within_at_once,
)
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.group import TaskGroup
from fnrelay.executor.lanes import Job, Lanes
from fnrelay.executor.pending import Chunk, PendingTable
from fnrelay.executor.transport import BrokerApi, PublisherFactory, TaskPublisher
from fnrelay.library_logs import reports_its_own_errors

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 4_000_000  # keep each request well below the broker's payload limit
IDLE_SERVICE = 5.0  # the submitter answers AMQP heartbeats this often while idle
QUOTA_MIN_WAIT = 0.5  # the least wait before resending a chunk the quota refused
LANES_POLL = 0.05  # while lanes publish, how often the submitter looks for failed messages
#: At shutdown, the longest wait (seconds) for the broker to list the last direct-path task,
#: and the first pause between asking (doubled up to RECORDED_PAUSE_MAX).
RECORDED_WAIT = 10.0
RECORDED_PAUSE, RECORDED_PAUSE_MAX = 0.005, 0.1


class Submitter:
    """Sends the pending table's queued futures until it takes the None that shutdown queues.

    `ensure_group` attaches the task group (and starts the result watcher) before the first
    send, for the endpoint that send goes to; the Executor provides it, as it owns both.
    """

    def __init__(self, pending: PendingTable, api: BrokerApi, group: TaskGroup,
                 ensure_group: Callable[[str], dict[str, Any]], publishers: PublisherFactory,
                 batch_size: int):
        self._pending, self._api, self._group = pending, api, group
        self._ensure_group, self._publishers = ensure_group, publishers
        self.batch_size = batch_size
        self._publisher: TaskPublisher | None = None  # this thread's (see _direct_up)
        self._lanes: Lanes | None = None  # a burst's messages, confirmed side by side
        #: Set once `_publisher` is this thread's: its connection is open, or opening it
        #: failed (the first publish then tries again and reports). The connector's thread
        #: opens the connection and does not touch it after setting this: pika allows one
        #: thread at a time.
        self._direct_up = threading.Event()
        self._connector: threading.Thread | None = None
        self._burst = False  # the batch being sent filled batch_size: more may be queued
        self._records = Records()  # the broker's copies of direct-path tasks, sent batched
        self._last_recorded: str | None = None  # the last task of the last records sent
        self._thread = threading.Thread(target=self.run, name="fnrelay-submitter", daemon=True)
        self.started = False
        self._attach_for: str | None = None

    def start(self, attach_for: str | None = None) -> None:
        """Start the thread; with `attach_for` it first attaches the task group for that
        endpoint, so a first submit's function registration and the group's creation (and the
        result stream's connection) overlap instead of following each other."""
        self.started = True
        self._attach_for = attach_for
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def run(self) -> None:
        reports_its_own_errors()  # a lost direct path is one WARNING, not pika's ERRORs
        try:
            self.attach_early()
            self.submit_until_done()
        finally:
            self.finish()

    def finish(self) -> None:
        """The thread's last step: let the direct path's connection finish opening, settle
        the lanes, send the broker's last records, close the lanes' connections and this
        thread's, and wait for the broker to list the group's tasks."""
        if self._connector is not None:
            self._connector.join()
        self.settle_lanes()
        self.send_records()
        if self._lanes is not None:
            self._lanes.close()
        if self._publisher is not None:
            self._publisher.close()
        self.await_recorded()

    def await_recorded(self) -> None:
        """Wait until the broker lists the last direct-path task whose record was sent, and
        has its result if this Executor has it (the broker writes a group's records in the
        order sent, holding each a moment to write it with its result), at most
        RECORDED_WAIT: so a shutdown Executor's group, reloaded at once by another session,
        lists every task and what finished, as had they gone over REST. Should the broker
        not answer, the records and results still wait in its durable queues."""
        task_id = self._last_recorded
        if task_id is None:
            return
        deadline = time.monotonic() + RECORDED_WAIT
        pause = RECORDED_PAUSE
        while True:
            try:
                record = self._api.get_tasks([task_id])["tasks"].get(task_id)
                if record is not None and (not record["pending"]
                                           or self._pending.is_outstanding(task_id)):
                    return
            except errors.FnRelayError as e:
                log.info("could not ask the broker whether it recorded the tasks (%s)", e)
                return
            if time.monotonic() + pause > deadline:
                log.info("the broker has not recorded the last tasks after %.0f s; it records "
                         "them from its queue", RECORDED_WAIT)
                return
            time.sleep(pause)
            pause = min(pause * 2, RECORDED_PAUSE_MAX)

    def attach_early(self) -> None:
        """Attach the group ahead of the first send; a failure is left to that send, which
        tries again and fails its futures with the reason."""
        if self._attach_for is None:
            return
        try:
            self._ensure_group(self._attach_for)
        except Exception as e:  # noqa: BLE001 - the first send reports it
            log.info("attaching the task group ahead of the first send failed: %s", e)
            return
        self.open_direct()

    def open_direct(self) -> threading.Event:
        """Start opening the direct path's connection (once, if the group has the grant);
        returns the event set when the publisher is this thread's to use. Called on the
        submitter's thread (and by tests before it starts)."""
        info = self._group.info
        grant = info.get("submit") if info is not None else None
        if self._connector is None and info is not None and self._group.direct and grant:
            publisher = self._publishers(grant["exchange"], grant["routing_key"])
            self._publisher = publisher
            self._lanes = Lanes(lambda: self._publishers(grant["exchange"], grant["routing_key"]),
                                self._lane_confirmed)
            self._connector = threading.Thread(
                target=self._connect_direct, args=(publisher, info["amqp_url"]),
                name="fnrelay-direct-connect", daemon=True)
            self._connector.start()
        return self._direct_up

    def _connect_direct(self, publisher: TaskPublisher, amqp_url: str) -> None:
        reports_its_own_errors()  # a connection that does not open is one INFO, not pika's ERRORs
        try:
            publisher.connect(amqp_url)
        except DirectUnavailable as e:
            log.info("the direct path's connection did not open (%s); the first publish tries "
                     "again", e)
        finally:
            self._direct_up.set()

    def _next_queued(self) -> FnRelayFuture | None:
        """The next queued future (None: shut down), sending the broker's records when due and
        answering AMQP heartbeats meanwhile."""
        while True:
            self._resend_failed()
            wait = self._records.wait(IDLE_SERVICE)
            if self._lanes is not None and self._lanes.busy():
                wait = min(wait, LANES_POLL)
            try:
                return self._pending.queue.get(timeout=wait)
            except queue.Empty:
                if self._records.ready():
                    self.send_records()
                elif self._publisher is not None and self._direct_up.is_set():
                    self._publisher.service()

    def submit_until_done(self) -> None:
        q = self._pending.queue
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
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            self._burst = len(batch) >= self.batch_size
            self.send(batch)
            self._resend_failed()
            if self._records.ready():
                self.send_records()
        self.settle_lanes()

    def settle_lanes(self) -> None:
        """Wait for every message the lanes hold to be confirmed, sending the failed ones over
        REST (before shutdown, and before the broker's last records)."""
        if self._lanes is None:
            return
        self._lanes.wait_idle()
        self._resend_failed()

    def _resend_failed(self) -> None:
        """Send over REST the messages a lane could not publish; the direct path is off."""
        if self._lanes is None:
            return
        while True:
            try:
                job, e = self._lanes.failed.get_nowait()
            except queue.Empty:
                return
            self._direct_failed(job.chunk, job.msgs, e)
            self._pending.sent()  # the lane's send ends; REST sends it anew
            self.send_chunk(job.chunk)

    def send(self, batch: list[FnRelayFuture]) -> None:
        """Send a batch of queued futures (those cancelled meanwhile are skipped)."""
        for run in by_endpoint(self._pending.claim(batch)):
            for chunk in split(run, MAX_BATCH_BYTES):
                self.send_chunk(chunk)

    def send_chunk(self, chunk: Chunk) -> None:
        """Send futures bound for one endpoint."""
        pending = self._pending
        endpoint_id = chunk[0][0]._endpoint_id
        assert endpoint_id is not None  # submit refuses a task without one
        pending.sending()
        try:
            self._ensure_group(endpoint_id)
            while True:
                chunk = self._send_direct(chunk, endpoint_id)
                if not chunk:
                    pending.sent()
                    return
                answer = self._submit_within_quota(endpoint_id, chunk)
                if answer is not None:
                    break
        except errors.PayloadTooLargeError as e:
            pending.sent()
            if len(chunk) > 1:  # the broker's limit is lower than ours: halve and retry
                half = len(chunk) // 2
                self.send_chunk(chunk[:half])
                self.send_chunk(chunk[half:])
                return
            pending.fail(chunk, e)
            return
        except Exception as e:  # noqa: BLE001 - the futures must learn why
            pending.sent()
            pending.fail(chunk, e)
            return
        pending.accepted(chunk, answer["task_ids"])

    def _submit_within_quota(self, endpoint_id: str, chunk: Chunk) -> dict[str, Any] | None:
        """POST the chunk; while the broker refuses it for the user's quota of unfinished
        tasks, wait as it says and send it again: the futures stay pending, none is lost.
        Refused while the direct path's connection opens, it waits for that instead and
        returns None: the quota never refuses the direct path (docs/deployment.md).
        Shutdown with cancel_futures ends the wait (the chunk fails as cancelled)."""
        refused_since: float | None = None
        while True:
            try:
                # The Executor's EndpointStates reads the endpoint's Python versions.
                answer = self._api.submit(endpoint_id, [entry for _, entry in chunk],
                                          self._group.id, check_versions=False)
            except errors.QuotaExceededError as e:
                if self._pending.cancel_unclaimed:
                    raise cf.CancelledError("the Executor was shut down with "
                                            "cancel_futures=True") from e
                wait = max(e.retry_after, QUOTA_MIN_WAIT)
                if self._connector is not None and not self._direct_up.is_set():
                    if self._direct_up.wait(wait):
                        return None
                    continue
                if refused_since is None:
                    refused_since = time.monotonic()
                    log.warning("%s; the Executor sends these %d task(s) again every %.0f s "
                                "until it is accepted (their futures stay pending)",
                                e, len(chunk), e.retry_after)
                time.sleep(wait)
                continue
            if refused_since is not None:
                log.info("the broker accepted the tasks it had refused (after %.0f s)",
                         time.monotonic() - refused_since)
            return answer

    def send_records(self) -> None:
        """Send the broker its records of the direct-path tasks published so far. If that
        fails, the endpoint's copies of their results carry the records instead."""
        tasks = self._records.take()
        info = self._group.info
        if not tasks or self._publisher is None or info is None or not self._direct_up.is_set():
            return
        try:
            self._publisher.publish(info["amqp_url"], wire.encode_tasks(tasks), records=True)
            self._last_recorded = tasks[-1].task_id
        except DirectUnavailable as e:
            log.warning("could not send the broker its records of %d task(s) (%s); it records "
                        "them from their results", len(tasks), e)

    # --- the direct path ---------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        info = self._group.info
        assert info is not None  # attached by ensure_group before the first send
        return info

    def _send_direct(self, chunk: Chunk, endpoint_id: str) -> Chunk:
        """Publish the chunk straight to the endpoint (the direct path); returns what is left
        for REST: all of it if the path is not granted for `endpoint_id` (it is granted for
        the group's first endpoint) or its connection is still opening, else what a failed
        publish left."""
        grant = self._info().get("submit")
        if not (self._group.direct and grant) or endpoint_id != self._group.endpoint_id:
            return chunk
        found = [self._api.function_body(e["function_id"]) for _, e in chunk]
        bodies = [b for b in found if b is not None]
        if len(bodies) < len(found):  # registered elsewhere: only the broker has the code
            return chunk
        if not self.open_direct().is_set():  # REST while the connection opens
            return chunk
        ids = [wire.new_task_id() for _ in chunk]
        group_id = str(self._group.id)
        msgs = task_messages([e for _, e in chunk], ids, bodies, group_id)
        body = wire.encode_tasks(msgs)
        limit = grant.get("payload_limit")  # None: an older broker
        if limit is None or within_at_once(
                len(body), submit_size(endpoint_id, [], self._group.id), limit):
            return [] if self._publish_direct(chunk, msgs, body) else chunk
        return self._publish_limited(chunk, msgs, limit, endpoint_id)

    def _publish_limited(self, chunk: Chunk, msgs: list[wire.TaskMessage], limit: int,
                         endpoint_id: str) -> Chunk:
        """A chunk near the broker's payload limit: fail each task whose REST request alone
        would exceed it (REST would refuse it), publish the others in messages within it.
        Returns what is left for REST."""
        fits = []
        for item, msg in zip(chunk, msgs, strict=True):
            size = submit_size(endpoint_id, [item[1]], self._group.id)
            if size > limit:
                self._pending.fail([item], too_large(size, limit))
            else:
                fits.append((item, msg))
        for run in message_runs([msg for _, msg in fits], limit):
            part = [msg for _, msg in fits[run]]
            if not self._publish_direct([item for item, _ in fits[run]], part,
                                        wire.encode_tasks(part)):
                return [item for item, _ in fits[run.start:]]
        return []

    def _publish_direct(self, chunk: Chunk, msgs: list[wire.TaskMessage], body: bytes) -> bool:
        """Publish one `tasks` message; False if it failed (the direct path is then off: REST
        from now on). Part of a burst, it goes to a lane and returns before its confirm (a
        failure comes back through `_resend_failed`)."""
        self._pending.publishing(chunk, msgs)
        # The group's URL as of now: attaching again gives its account a new password.
        job = Job(chunk, msgs, body, self._info()["amqp_url"])
        assert self._publisher is not None and self._lanes is not None  # open_direct's
        if self._burst or self._lanes.busy():
            self._pending.sending()  # until its lane has the confirm (or gives it back)
            self._lanes.put(job)
            return True
        try:
            self._publisher.publish(job.amqp_url, body)
        except DirectUnavailable as e:
            self._direct_failed(chunk, msgs, e)
            return False
        self._confirmed(job)
        return True

    def _lane_confirmed(self, job: Job) -> None:
        """A lane's message is confirmed (on the lane's thread)."""
        self._confirmed(job)
        self._pending.sent()

    def _confirmed(self, job: Job) -> None:
        self._records.add(job.msgs)
        for future, _ in job.chunk:
            future._submitted.set()

    def _direct_failed(self, chunk: Chunk, msgs: list[wire.TaskMessage],
                       e: DirectUnavailable) -> None:
        """A publish failed: the direct path is off, the futures go back to unsent."""
        log.warning("direct path to endpoint %s unavailable (%s); submitting over REST "
                    "from now on%s", self._group.endpoint_id, e,
                    " (these tasks may run twice)" if e.sent else "")
        self._group.direct = False
        self._pending.unpublished(chunk, msgs)


def by_endpoint(items: Chunk) -> list[Chunk]:
    """Runs of consecutive futures bound for the same endpoint, in submission order (the
    endpoint may change between submits, as in Globus Compute)."""
    runs: list[Chunk] = []
    for item in items:
        if runs and runs[-1][0][0]._endpoint_id == item[0]._endpoint_id:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def split(items: Chunk, max_bytes: int) -> list[Chunk]:
    """Split a batch so that no request carries much more than `max_bytes` of payload."""
    return [items[run] for run in chunks.by_size([len(e["payload"]) for _, e in items], max_bytes)]
