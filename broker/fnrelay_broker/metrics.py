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

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest

from fnrelay_broker.errors import ApiError

#: Buckets from a warm pool's milliseconds to batch jobs' hours.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
                   3600, 4 * 3600, 12 * 3600, 48 * 3600)
#: The direct path's records wait up to routing.RECORD_HOLD on purpose: finer buckets there.
LEDGER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Made without a registry: each app's registry (create_app may run more than once in one
# process, as in tests) adds them; they count for the whole process either way.
SUBMITTED = Counter("fnrelay_tasks_submitted", "Tasks accepted by this broker process, by "
                    "path (rest: POST /v1/submit and the Globus Compute API; direct: records "
                    "of tasks an Executor published to its endpoint).", ["path"], registry=None)
RESULTS = Counter("fnrelay_task_results", "Terminal results this broker process recorded, by "
                  "state.", ["state"], registry=None)
LATENCY = Histogram("fnrelay_task_latency_seconds", "From a task's submission to its result "
                    "(its history's first and last steps).", buckets=LATENCY_BUCKETS,
                    registry=None)
QUEUE_WAIT = Histogram("fnrelay_task_queue_wait_seconds", "From a task's submission to the "
                       "start of its run (queues, batch scheduler, worker start).",
                       buckets=LATENCY_BUCKETS, registry=None)
RUN_TIME = Histogram("fnrelay_task_run_seconds", "A task's run, from its start to its result "
                     "(as the endpoint timed it).", buckets=LATENCY_BUCKETS, registry=None)
LEDGER_LAG = Histogram("fnrelay_ledger_lag_seconds", "Direct path: from a task record's "
                       "arrival at the broker to its commit in the ledger.",
                       buckets=LEDGER_BUCKETS, registry=None)
INSTRUMENTS = (SUBMITTED, RESULTS, LATENCY, QUEUE_WAIT, RUN_TIME, LEDGER_LAG)


@dataclass(frozen=True)
class Timing:
    """One recorded result's times (broker clock; `started` None when nobody reported it)."""

    state: str
    created: float
    started: float | None
    completed: float


def observe(timings: Iterable[Timing]) -> None:
    """Count results and their latencies; call after their transaction committed."""
    for t in timings:
        RESULTS.labels(t.state).inc()
        LATENCY.observe(max(0.0, t.completed - t.created))
        if t.started is not None:
            QUEUE_WAIT.observe(max(0.0, t.started - t.created))
            RUN_TIME.observe(max(0.0, t.completed - t.started))


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


def registry_with(*collectors: object) -> CollectorRegistry:
    """A registry of this process's instruments and `collectors`."""
    registry = CollectorRegistry(auto_describe=True)
    for c in (*INSTRUMENTS, *collectors):
        registry.register(c)  # type: ignore[arg-type]
    return registry
