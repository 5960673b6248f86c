"""The broker's batch instruments export what prometheus_client's own would for the same
observations (they exist only to take a batch under one lock)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from fnrelay_broker.metrics import BatchCounter, BatchHistogram


def _lines(registry: CollectorRegistry, prefix: str) -> list[str]:
    return [ln.removeprefix(prefix) for ln in generate_latest(registry).decode().splitlines()
            if ln.startswith(prefix) and "_created" not in ln]


def test_batch_instruments_export_what_prometheus_client_would():
    values = [0.0, 0.005, 0.0051, 1.0, 2.4, 3600.0, 1e6, 0.3]
    bounds = (0.005, 0.01, 1.0, 5.0, 3600.0)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hist = BatchHistogram("a_seconds", "doc", bounds)
    hist.observe(values[:3])
    hist.observe(values[3:])
    count = BatchCounter("a_events", "doc", "state")
    count.add("success", 2)
    count.add("failed")
    count.add("success")

    class Both:
        def collect(self):  # type: ignore[no-untyped-def]
            yield hist.family()
            yield count.family()

    ours.register(Both())  # type: ignore[arg-type]
    reference = Histogram("a_seconds", "doc", buckets=bounds, registry=theirs)
    for v in values:
        reference.observe(v)
    events = Counter("a_events", "doc", ["state"], registry=theirs)
    events.labels("success").inc(3)
    events.labels("failed").inc()
    assert len(_lines(ours, "a_seconds")) == len(bounds) + 3  # buckets, +Inf, count, sum
    assert _lines(ours, "a_seconds") == _lines(theirs, "a_seconds")
    assert sorted(_lines(ours, "a_events")) == sorted(_lines(theirs, "a_events"))
