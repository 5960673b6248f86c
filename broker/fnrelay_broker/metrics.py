"""GET /metrics: the broker's figures for Prometheus, read by operators only.

Two kinds of figure, which matter once several broker replicas share one database:
- counted by this process as it works (the instruments below: submits, results, latencies,
  the direct path's ledger lag). Each replica counts its own share: sum them over replicas
  (`sum without (instance)`); a replica's restart resets them, as Prometheus expects.
- read at scrape time from the database, RabbitMQ and the endpoints' last heartbeats
  (`figures.py`). Every replica answers the same: scrape one, or take `max` over replicas.

Per-user labels show every tenant's activity, hence operators only (BrokerSettings.operators).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fnrelay_broker.errors import ApiError

#: Buckets from a warm pool's milliseconds to batch jobs' hours.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
                   3600, 4 * 3600, 12 * 3600, 48 * 3600)
#: The direct path's records wait up to routing.RECORD_HOLD on purpose: finer buckets there.
LEDGER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class BatchCounter:
    """A counter with one label, added to a batch at a time."""

    def __init__(self, name: str, doc: str, label: str):
        self.name, self.doc, self.label = name, doc, label
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {}

    def add(self, value: str, n: float = 1) -> None:
        with self._lock:
            self._counts[value] = self._counts.get(value, 0) + n

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        with self._lock:
            for value, n in sorted(self._counts.items()):
                family.add_metric([value], n)
        return family


class BatchHistogram:
    """A histogram fed a batch of values under one lock. prometheus_client's Histogram takes
    its lock per value: three per result cost ~18 us, on the ledger's hottest path."""

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]):
        self.name, self.doc, self.bounds = name, doc, bounds
        self._lock = threading.Lock()
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0

    def observe(self, values: Iterable[float]) -> None:
        counts, total = [0] * len(self._counts), 0.0
        for v in values:
            counts[bisect.bisect_left(self.bounds, v)] += 1  # le: v <= bound
            total += v
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


SUBMITTED = BatchCounter("fnrelay_tasks_submitted", "Tasks accepted by this broker process, by "
                         "path (rest: POST /v1/submit and the Globus Compute API; direct: "
                         "records of tasks an Executor published to its endpoint).", "path")
RESULTS = BatchCounter("fnrelay_task_results", "Terminal results this broker process "
                       "recorded from endpoints, by state.", "state")
LATENCY = BatchHistogram("fnrelay_task_latency_seconds", "From a task's submission to its "
                         "result (its history's first and last steps).", LATENCY_BUCKETS)
QUEUE_WAIT = BatchHistogram("fnrelay_task_queue_wait_seconds", "From a task's submission to "
                            "the start of its run (queues, batch scheduler, worker start).",
                            LATENCY_BUCKETS)
RUN_TIME = BatchHistogram("fnrelay_task_run_seconds", "A task's run, from its start to its "
                          "result (as the endpoint timed it).", LATENCY_BUCKETS)
LEDGER_LAG = BatchHistogram("fnrelay_ledger_lag_seconds", "Direct path: from a task record's "
                            "arrival at the broker to its commit in the ledger.",
                            LEDGER_BUCKETS)


class ProcessFigures(Collector):
    """This process's instruments (one set per process, whatever the apps in it)."""

    def collect(self) -> Iterator[Any]:
        for instrument in (SUBMITTED, RESULTS, LATENCY, QUEUE_WAIT, RUN_TIME, LEDGER_LAG):
            yield instrument.family()


@dataclass(frozen=True)
class Timing:
    """One recorded result's times (broker clock; `started` None when nobody reported it)."""

    state: str
    created: float
    started: float | None
    completed: float


def observe(timings: list[Timing]) -> None:
    """Count results and their latencies; call after their transaction committed."""
    if not timings:
        return
    for state, n in Counter(t.state for t in timings).items():
        RESULTS.add(state, n)
    LATENCY.observe(max(0.0, t.completed - t.created) for t in timings)
    ran = [(t.created, t.started, t.completed) for t in timings if t.started is not None]
    QUEUE_WAIT.observe(max(0.0, started - created) for created, started, _ in ran)
    RUN_TIME.observe(max(0.0, done - started) for _, started, done in ran)


def install(app: FastAPI, registry: CollectorRegistry) -> None:
    """GET /metrics for operators: 401 without a valid token, 403 for anyone else."""
    from fnrelay_broker.app import current_user  # the app module imports this one

    broker = app.state.broker

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        user = current_user(request)
        if user.is_endpoint_token or not broker.settings.is_operator(user.username):
            raise ApiError(403, "only the service's operators read /metrics (fnrelay-broker "
                                "serve --operator NAME)")
        return Response(_generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def registry_with(*collectors: Collector) -> CollectorRegistry:
    """A registry of this process's instruments and `collectors`."""
    registry = CollectorRegistry(auto_describe=True)
    for c in (ProcessFigures(), *collectors):
        registry.register(c)
    return registry
