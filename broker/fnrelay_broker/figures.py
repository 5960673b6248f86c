"""The figures /metrics reads at scrape time: from the database (tasks, outbox, blobs, the
endpoints' last heartbeats) and from RabbitMQ (queue depths, bounded by queue_probe.py). Every
broker replica reads the same ones (metrics.py says which figures are per process instead).

An endpoint opens no port: what it says of itself (running tasks, workers or batch jobs by
state, its journal, its reconnects) comes in its heartbeat, is kept as `endpoints.details`
(tasks.record_heartbeat), and is exported here, labelled by endpoint id, name and owner.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from fnrelay import wire
from fnrelay_broker.db import Database
from fnrelay_broker.models import OPEN_TASK, Endpoint, Outbox, ResultBlob, Task, User
from fnrelay_broker.queue_probe import Candidate, QueueProbe
from fnrelay_broker.queues import QueueNames
from fnrelay_broker.registry import endpoint_status

log = logging.getLogger(__name__)

_EP_LABELS = ["endpoint_id", "endpoint", "owner"]


class BrokerFigures(Collector):
    """Reads the database anew at each scrape (replicas stay consistent); queue depths at
    most once per `probe.ttl` (queue_probe.py)."""

    def __init__(self, db: Database, names: QueueNames, offline_after: float,
                 probe: QueueProbe):
        self.db, self.names, self.probe = db, names, probe
        self.offline_after = offline_after

    def collect(self) -> Iterator[Any]:
        endpoints = self._endpoints()
        yield from self._tasks()
        yield from self._outbox()
        yield from self._blobs()
        yield from endpoint_families(endpoints, self.offline_after)
        yield from self._queues(endpoints)

    # --- database -------------------------------------------------------------------------------
    def _tasks(self) -> Iterator[GaugeMetricFamily]:
        """Unfinished tasks by state, and by owner and state: one pass over the partial index
        of unfinished tasks (the quota's), however many finished tasks are kept; finished
        ones are counted as they finish (fnrelay_task_results_total)."""
        with self.db.read() as s:
            rows = s.execute(select(User.username, Task.status, func.count())
                             .join(User, User.id == Task.owner)
                             .where(text(OPEN_TASK))
                             .group_by(User.username, Task.status)).all()
        by_state = GaugeMetricFamily("fnrelay_tasks", "Unfinished tasks, by state.",
                                     labels=["state"])
        by_user = GaugeMetricFamily("fnrelay_user_tasks", "Unfinished tasks by owner and "
                                    "state (what the quota --max-queued-per-user counts).",
                                    labels=["username", "state"])
        totals = {s.value: 0 for s in wire.TaskState if not s.terminal}
        for username, status, n in rows:
            totals[status] = totals.get(status, 0) + n
            by_user.add_metric([username, status], n)
        for status, n in totals.items():
            by_state.add_metric([status], n)
        yield by_state
        yield by_user

    def _outbox(self) -> Iterator[GaugeMetricFamily]:
        """Messages committed but not yet confirmed by RabbitMQ, and how long the oldest task
        among them has waited: the outbox publisher's lag."""
        with self.db.read() as s:
            rows = s.execute(select(Outbox.kind, func.count()).group_by(Outbox.kind)).all()
            oldest = s.scalar(select(func.min(Task.created)).join(
                Outbox, Outbox.task_id == Task.id).where(Outbox.kind == "task"))
        pending = GaugeMetricFamily("fnrelay_outbox_messages", "Outbox rows not yet published "
                                    "(task, cancel, result, start-child).", labels=["kind"])
        for kind in ("task", "cancel", "result"):
            pending.add_metric([kind], 0)
        for kind, n in rows:
            pending.add_metric([kind], n)
        yield pending
        yield GaugeMetricFamily("fnrelay_outbox_oldest_task_age_seconds", "Age of the oldest "
                                "task waiting in the outbox (0: none waits).",
                                value=max(0.0, wire.now() - oldest) if oldest else 0.0)

    def _blobs(self) -> Iterator[GaugeMetricFamily]:
        with self.db.read() as s:
            rows = s.execute(select(ResultBlob.store, func.count(), func.sum(ResultBlob.size))
                             .group_by(ResultBlob.store)).all()
        count = GaugeMetricFamily("fnrelay_blobs", "Result blobs kept, by store.",
                                  labels=["store"])
        size = GaugeMetricFamily("fnrelay_blob_bytes", "Bytes of result blobs kept, by store.",
                                 labels=["store"])
        for store, n, total in rows:
            count.add_metric([store], n)
            size.add_metric([store], float(total or 0))
        yield count
        yield size

    def _endpoints(self) -> list[tuple[Endpoint, str]]:
        """Every endpoint, detached from its session, with its owner's username."""
        with self.db.read() as s:
            rows = [(ep, username) for ep, username in s.execute(
                select(Endpoint, User.username).join(User, User.id == Endpoint.owner))]
            s.expunge_all()
        return rows

    # --- RabbitMQ -------------------------------------------------------------------------
    def _queues(self, endpoints: list[tuple[Endpoint, str]]) -> Iterator[GaugeMetricFamily]:
        """Queue depths, at the cost queue_probe.py bounds."""
        broker_q = GaugeMetricFamily("fnrelay_queue_messages", "Messages in the broker's own "
                                     "queues (results: what endpoints sent, not yet "
                                     "recorded; records: the direct path's records, not yet "
                                     "recorded; deadletter: refused messages).",
                                     labels=["queue"])
        ready = GaugeMetricFamily("fnrelay_endpoint_queue_messages", "Tasks waiting in an "
                                  "endpoint's queue (not yet taken by the endpoint).",
                                  labels=_EP_LABELS)
        consumers = GaugeMetricFamily("fnrelay_endpoint_queue_consumers", "Consumers of an "
                                      "endpoint's queue (0: nobody takes its tasks).",
                                      labels=_EP_LABELS)
        depths = self.probe.depths([
            Candidate(ep.id, self.names.endpoint(ep.id),
                      endpoint_status(ep, self.offline_after) == "online")
            for ep, _ in endpoints])
        for name, (messages, _) in depths.broker.items():
            broker_q.add_metric([name], messages)
        for ep, owner in endpoints:
            if (depth := depths.endpoints.get(ep.id)) is not None:
                labels = [ep.id, ep.name, owner]
                ready.add_metric(labels, depth[0])
                consumers.add_metric(labels, depth[1])
        yield broker_q
        yield ready
        yield consumers
        yield GaugeMetricFamily("fnrelay_endpoint_queues_unprobed", "Endpoint queues whose "
                                "depth was not read (beyond --metrics-queue-probes).",
                                value=depths.unprobed)
        yield GaugeMetricFamily("fnrelay_rabbitmq_up", "1 if this scrape could read RabbitMQ's "
                                "queues, else 0.", value=1 if depths.up else 0)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _running(info: dict[str, Any]) -> tuple[float | None, float | None]:
    """(running, queued) tasks as each engine's info() says them."""
    if info.get("engine") == "local":
        return _number(info.get("busy")), _number(info.get("queued"))
    if info.get("engine") == "batch":
        jobs = info.get("jobs_by_state") or {}
        running = _number(jobs.get("running")) if isinstance(jobs, dict) else None
        waiting = sum(_number(v) or 0.0 for k, v in jobs.items() if k != "running") \
            if isinstance(jobs, dict) else 0.0
        return running, waiting + (_number(info.get("submitting")) or 0.0)
    return _number(info.get("running")), _number(info.get("queued"))


def endpoint_families(endpoints: list[tuple[Endpoint, str]], offline_after: float
                      ) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """What each endpoint's last heartbeat said (a figure it did not send is left out)."""
    def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*_EP_LABELS, *(extra or [])])

    online = gauge("fnrelay_endpoint_online", "1 if the endpoint's last heartbeat is recent "
                   "(within the broker's heartbeat threshold), else 0.")
    last = gauge("fnrelay_endpoint_last_heartbeat_timestamp_seconds", "When the broker got the "
                 "endpoint's last heartbeat (Unix time).")
    running = gauge("fnrelay_endpoint_running_tasks", "Tasks running on the endpoint.")
    queued = gauge("fnrelay_endpoint_queued_tasks", "Tasks the endpoint holds but has not "
                   "started (waiting for a worker, a batch job or a pilot block).")
    workers = gauge("fnrelay_endpoint_workers", "Worker processes of a local engine, by "
                    "state.", ["state"])
    jobs = gauge("fnrelay_endpoint_batch_jobs", "Batch jobs of a batch engine, by state "
                 "(submitted: the scheduler has not reported on it yet).", ["state"])
    blocks = gauge("fnrelay_endpoint_pilot_blocks", "Pilot blocks (batch jobs) of a Parsl "
                   "engine.")
    journal_bytes = gauge("fnrelay_endpoint_journal_bytes", "Size of the endpoint's journal "
                          "on its disk (with its write-ahead log).")
    journal_rows = gauge("fnrelay_endpoint_journal_tasks", "Tasks in the endpoint's journal, "
                         "by journal state.", ["state"])
    unpublished = gauge("fnrelay_endpoint_unpublished_results", "Results the endpoint holds "
                        "whose publish RabbitMQ has not confirmed yet.")
    reconnects = CounterMetricFamily("fnrelay_endpoint_reconnects", "AMQP connections the "
                                     "endpoint lost since its process started.",
                                     labels=_EP_LABELS)
    for ep, owner in endpoints:
        labels = [ep.id, ep.name, owner]
        online.add_metric(labels, 1 if endpoint_status(ep, offline_after) == "online" else 0)
        if ep.last_heartbeat is not None:
            last.add_metric(labels, ep.last_heartbeat)
        info = ep.details if isinstance(ep.details, dict) else {}
        n_running, n_queued = _running(info)
        if n_running is not None:
            running.add_metric(labels, n_running)
        if n_queued is not None:
            queued.add_metric(labels, n_queued)
        _local_workers(workers, labels, info)
        for state, v in _states(info.get("jobs_by_state")):
            jobs.add_metric([*labels, state], v)
        if isinstance(info.get("blocks"), dict):
            blocks.add_metric(labels, sum(len(b) for b in info["blocks"].values()
                                          if isinstance(b, list)))
        _journal(journal_bytes, journal_rows, unpublished, labels, info.get("journal"))
        if (n := _number(info.get("reconnects"))) is not None:
            reconnects.add_metric(labels, n)
    yield from (online, last, running, queued, workers, jobs, blocks, journal_bytes,
                journal_rows, unpublished, reconnects)


#: A state name from a heartbeat (a scheduler's job state, a journal state) as a label value.
_STATE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
#: The most states one endpoint's figure shows: heartbeats are the endpoint owner's words,
#: and every label value is a time series the operators' Prometheus keeps.
MAX_STATES = 16


def _states(by_state: Any) -> list[tuple[str, float]]:
    """(state, count) pairs of a heartbeat's dict whose names look like states, at most
    MAX_STATES of them."""
    if not isinstance(by_state, dict):
        return []
    found = [(str(k), v) for k, n in by_state.items()
             if _STATE.match(str(k)) and (v := _number(n)) is not None]
    return found[:MAX_STATES]


def _local_workers(family: GaugeMetricFamily, labels: list[str], info: dict[str, Any]) -> None:
    total, busy = _number(info.get("workers")), _number(info.get("busy"))
    if info.get("engine") == "local" and total is not None and busy is not None:
        family.add_metric([*labels, "busy"], busy)
        family.add_metric([*labels, "idle"], max(0.0, total - busy))


def _journal(size: GaugeMetricFamily, rows: GaugeMetricFamily, unpublished: GaugeMetricFamily,
             labels: list[str], journal: Any) -> None:
    if not isinstance(journal, dict):
        return
    if (n := _number(journal.get("bytes"))) is not None:
        size.add_metric(labels, n)
    for state, v in _states(journal.get("tasks")):
        rows.add_metric([*labels, state], v)
    if (n := _number(journal.get("unpublished"))) is not None:
        unpublished.add_metric(labels, n)
