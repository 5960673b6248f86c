"""The dashboard's wording of times and figures, and its chart buckets (pure functions)."""

from __future__ import annotations

from fnrelay_broker.dashboard import charts
from fnrelay_broker.dashboard.present import duration, in_use, pythons, timeline


def test_durations_use_the_largest_fitting_unit() -> None:
    assert [duration(s) for s in (0.0424, 12.34, 245, 7800)] == [
        "42 ms", "12.3 s", "4 min 5 s", "2 h 10 min"]
    assert duration(None) == ""


def test_time_in_each_state_runs_to_the_next_step_and_the_last_to_the_end() -> None:
    history = [{"status": "received", "time": 10.0}, {"status": "running", "time": 12.5}]
    assert [s["spent"] for s in timeline(history, 20.0)] == [2.5, 7.5]
    assert timeline(history, None)[-1]["spent"] is None  # finished: its end state has no span


def test_in_use_follows_the_engine_that_reported() -> None:
    assert in_use({"workers": 4, "busy": 3, "queued": 2}) == "3/4 workers busy, 2 queued"
    assert in_use({"jobs": 5, "submitting": 1}) == "5 batch jobs, 1 submitting"
    assert in_use({"running": 7, "queued": 0}) == "7 running, 0 queued"
    assert in_use({"engine": "x"}) == ""
    assert pythons({"python_version": "3.11.7"}) == "3.11.7"
    assert pythons({"python_version": "3.11.7", "python_versions": ["3.10", "3.12"]}) == \
        "3.10, 3.12"


def test_buckets_count_finished_tasks_and_average_their_latency() -> None:
    rows = [(0.0, 5.0), (4.0, 8.0), (50.0, 95.0), (0.0, 100.0), (0.0, -1.0)]
    b = charts.bucket(rows, start=0.0, end=100.0, n=10)
    assert b.counts == [2, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # 100.0 is past the end, -1 before
    assert b.latency[0] == 4.5 and b.latency[9] == 45.0 and b.latency[1] is None
    svg = charts.svg("t", b.latency, "s", 6)
    assert svg.count("<circle") == 2 and "max 45 s" in svg
