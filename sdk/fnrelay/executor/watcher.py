"""The result watcher: one thread per Executor that settles its futures from the task group's
result queue, and from the broker's REST API while the queue cannot be read.

It consumes with a bounded prefetch and acknowledges in groups; a result delivered again after
a reconnect is ignored by the pending table. When RabbitMQ cannot be reached it polls REST for
a backoff delay (`fnrelay.backoff`: 1 s doubling to 60 s, jittered), then tries again; an
expired queue or a refused reader account makes it ask the broker to attach the group again.
With the stream up it still polls REST after SAFETY_POLL seconds without any message, for
results that reached the broker but not the queue. While the stream's first connection opens,
a thread of its own polls REST for the outstanding tasks the broker has (those sent over REST:
the submitter sends so until the direct path's connection is open): a fresh process's first
result is at the broker before the consumer's AMQP set-up is done (docs/performance.md, round
18). Outages are reported once each at WARNING, then at INFO; the libraries' own records from
this thread are DEBUG (`fnrelay.library_logs`).
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

from fnrelay import backoff, errors, wire
from fnrelay.amqp import split_urls
from fnrelay.droplog import DropLog
from fnrelay.executor.endpoints import EndpointStates
from fnrelay.executor.group import TaskGroup
from fnrelay.executor.pending import PendingTable
from fnrelay.executor.transport import (
    BrokerApi,
    Delivery,
    QueueGone,
    ReaderRefused,
    ResultChannel,
    ResultStream,
    StreamError,
)
from fnrelay.library_logs import reports_its_own_errors
from fnrelay.retry_notice import silenced

log = logging.getLogger(__name__)

POLL_MIN, POLL_MAX = 0.2, 2.0  # REST polling interval bounds (fallback mode)
SAFETY_POLL = 15.0  # with AMQP, poll REST after this long without any result message
#: Result messages RabbitMQ may push to the Executor unacknowledged: a link's round trip
#: carries at most this many, so it is sized for a WAN's, not for one machine's.
PREFETCH = 500
ACK_EVERY = 50  # result messages acknowledged together (and whenever idle)
IDLE = 0.2  # seconds without a message after which the consumer acks and checks for the end
#: AMQP reconnect delays (seconds): exponential from the first, capped, with jitter.
RECONNECT_BASE, RECONNECT_CAP = 1.0, 60.0
#: Senders of a task group's messages, as `ResultWatcher.sender` tells them apart.
BROKER, ENDPOINT = "broker", "endpoint"
#: Task ids per REST status request.
POLL_BATCH = 1000
#: Seconds between REST polls while the stream first connects, doubling up to POLL_MIN: a few
#: polls while the stream's set-up takes a few round trips, few more if it takes long.
FIRST_POLL = 0.005


class Poller:
    """Asks the broker's REST API for the outstanding tasks' results (the watcher's fallback,
    and reload_tasks' catch-up); says once per outage that the broker does not answer."""

    def __init__(self, api: BrokerApi, pending: PendingTable):
        self._api, self._pending = api, pending
        self._broker_down = False  # the last poll failed (warned once per outage)

    def poll_once(self, task_ids: list[str] | None = None) -> bool:
        """Settle what the broker has finished (of `task_ids`, default every outstanding
        task); whether anything was."""
        if task_ids is None:
            task_ids = self._pending.task_ids()
        changed = False
        for start in range(0, len(task_ids), POLL_BATCH):
            try:
                with silenced():  # said below, once per outage
                    answer = self._api.get_tasks(task_ids[start:start + POLL_BATCH])
            except errors.FnRelayError as e:
                log.log(logging.INFO if self._broker_down else logging.WARNING,
                        "cannot poll the broker at %s for results (%s); trying again",
                        self._api.broker_url, e)
                self._broker_down = True
                return changed
            if self._broker_down:
                log.info("the broker at %s answers again", self._api.broker_url)
                self._broker_down = False
            done = [wire.ResultMessage.from_dict(r) for r in answer["tasks"].values()
                    if not r["pending"]]
            changed = changed or bool(done)
            self._pending.settle_all(done)
        return changed


class ResultWatcher:
    """Streams results over AMQP while it works and polls REST while it does not, until
    stopped or until the Executor is shut down with nothing left to wait for."""

    def __init__(self, pending: PendingTable, group: TaskGroup, stream: ResultStream,
                 poller: Poller, api: BrokerApi, stop: threading.Event, dropped: DropLog,
                 endpoints: EndpointStates | None = None):
        self._pending, self._group, self._stream = pending, group, stream
        self._poller, self._api, self._stop, self._dropped = poller, api, stop, dropped
        self._endpoints = endpoints  # checked while their tasks wait (None: not checked)
        self.connected = False  # for diagnostics: results stream over AMQP
        self._reconnects = 0  # failed AMQP connection attempts in a row
        self._first_try = threading.Event()  # the stream's first connection is up, or failed
        self._channel: ResultChannel | None = None  # the stream's, while it is open
        self._thread = threading.Thread(target=self.run, name="fnrelay-result-watcher",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def wake(self) -> None:
        """End the stream's wait for a message now, not after IDLE (the Executor shuts down
        with every future settled: a `with Executor(...)` block would end up to IDLE late)."""
        channel = self._channel
        if channel is not None:
            channel.wake()

    def run(self) -> None:
        reports_its_own_errors()  # an outage is one WARNING each (fallback, Poller)
        early = threading.Thread(target=self.poll_until_streaming, daemon=True,
                                 name="fnrelay-first-results")
        early.start()
        try:
            self.watch()
        finally:
            self._first_try.set()
            early.join()

    def poll_until_streaming(self) -> None:
        """Poll REST for the tasks the broker has, back to back, until the stream's first
        connection is up or has failed (the fallback polls then)."""
        reports_its_own_errors()
        interval = FIRST_POLL
        while not (self._stop.is_set() or self._first_try.is_set()
                   or self._pending.finished()):
            task_ids = self._pending.broker_task_ids()
            if task_ids:
                self._poller.poll_once(task_ids[:POLL_BATCH])
                interval = min(interval * 2, POLL_MIN)
            self._first_try.wait(interval)

    def watch(self) -> None:
        """Stream results, or poll while the stream is down, until stopped or finished."""
        last_result = time.monotonic()
        while not self._stop.is_set() and not self._pending.finished():
            info = self._group.info
            assert info is not None  # the watcher starts once the group is attached
            try:
                last_result = self.consume(self._group.result_url(), info["queue"])
            except QueueGone:  # it expired: ask the broker to declare it again
                self.reattach()
            except ReaderRefused as e:
                # The group's reader password is reset whenever someone attaches to the group
                # (another Executor on it): ask the broker for a fresh one.
                log.info("result reader refused by RabbitMQ (%s); re-attaching", e)
                self.reattach()
                self._stop.wait(1.0)
            except StreamError as e:
                self.fallback(e)
                last_result = time.monotonic()
            if time.monotonic() - last_result > SAFETY_POLL:
                self._poller.poll_once()

    def fallback(self, error: BaseException) -> None:
        """Poll REST for the next reconnect delay."""
        delay = backoff.delay(self._reconnects, RECONNECT_BASE, RECONNECT_CAP)
        info = self._group.info
        # Once per outage at WARNING (a user waiting on futures should know why), then INFO.
        level = logging.WARNING if self._reconnects == 0 and info else logging.INFO
        self._reconnects += 1
        log.log(level, "result stream from RabbitMQ at %s unavailable (%s); polling the broker "
                "at %s meanwhile, reconnecting in %.1fs; pending futures resolve when either "
                "answers", host_of(self._group.result_url()) if info else "?",
                str(error) or type(error).__name__, self._api.broker_url, delay)
        self.connected = False
        self.poll_for(delay)

    def reattach(self) -> None:
        try:
            self._group.attach()
        except errors.FnRelayError as e:
            self.fallback(e)
            return
        self._poller.poll_once()  # results forwarded while the queue was gone were dropped

    def consume(self, amqp_url: str, queue: str) -> float:
        """Consume the group queue until stopped or finished; returns (the time of the last
        message) when the safety poll is due."""
        try:
            channel = self._stream.open(amqp_url, queue, PREFETCH)
        finally:
            self._first_try.set()  # up, or failed: the fallback's polling takes over
        try:
            self._channel = channel
            self.connected = True
            if self._reconnects:
                log.info("result stream from RabbitMQ at %s is back", host_of(amqp_url))
            self._reconnects = 0
            last = time.monotonic()
            # Acks go out together, every ACK_EVERY messages and whenever the queue is quiet:
            # one ack per result is one more frame for RabbitMQ and this process in each
            # call. Unacked results come again after a reconnect, and a second one is ignored.
            unacked, last_tag = 0, 0
            pending = self._pending
            for delivery in channel.deliveries(IDLE):
                if self._stop.is_set():
                    break
                if delivery is None:
                    if unacked:
                        channel.ack(last_tag)
                        unacked = 0
                    if pending.finished():
                        break
                    self.check_endpoints()
                    if pending.outstanding and time.monotonic() - last > SAFETY_POLL:
                        break
                    continue
                last = time.monotonic()
                sender = self.sender(delivery)
                if sender is not None and delivery.type == wire.MSG_RESULTS:
                    try:
                        results = wire.decode_results(delivery.body)
                    except (ValueError, KeyError, TypeError) as e:
                        self._dropped.note(f"a malformed results message ({e})")
                        results = []
                    pending.settle_all(results, via_endpoint=sender == ENDPOINT)
                unacked, last_tag = unacked + 1, delivery.tag
                if unacked >= ACK_EVERY:
                    channel.ack(last_tag)
                    unacked = 0
            channel.close(ack=last_tag if unacked else 0)
            return last
        finally:
            self._channel = None
            channel.close()

    def sender(self, delivery: Delivery) -> str | None:
        """Who sent the message: BROKER, ENDPOINT (the direct path's), or None for anyone else
        (dropped). RabbitMQ validates `user_id`; the broker lists who may send, its own account
        first (older brokers list nobody: then everything counts as the broker's)."""
        senders = (self._group.info or {}).get("result_senders")
        if senders is None or delivery.user_id == senders[0]:
            return BROKER
        if delivery.user_id in senders[1:]:
            return ENDPOINT
        self._dropped.note(f"a {delivery.type!r} message from RabbitMQ user "
                           f"{delivery.user_id!r} (expected one of {', '.join(senders)})")
        return None

    def check_endpoints(self) -> None:
        """Ask after the endpoints outstanding tasks wait for (each at most every few
        seconds): one that is offline is reported, as its futures would wait in silence."""
        if self._endpoints is not None and self._pending.outstanding:
            self._endpoints.watch(self._pending.endpoint_ids())

    def poll_for(self, seconds: float) -> None:
        """Poll REST for `seconds` (backing off while nothing changes)."""
        deadline = time.monotonic() + seconds
        interval = POLL_MIN
        while (not self._stop.is_set() and time.monotonic() < deadline
               and not self._pending.finished()):
            changed = self._poller.poll_once()
            self.check_endpoints()
            interval = POLL_MIN if changed else min(interval * 2, POLL_MAX)
            self._stop.wait(interval)


def host_of(amqp_url: str) -> str:
    """host:port of an AMQP URL (each of a list), for messages: never a user name or
    password."""
    return ",".join(_host_port(u) for u in split_urls(amqp_url) or [amqp_url])


def _host_port(url: str) -> str:
    parsed = urlsplit(url)
    return f"{parsed.hostname}:{parsed.port or (5671 if parsed.scheme == 'amqps' else 5672)}"
