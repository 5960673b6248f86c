"""The benchmark harness, run tiny (N=200) so that `make bench` never rots.

What is asserted is what a reader of docs/performance.md relies on: a run starts everything it
needs, measures every system, checks every task's result, writes complete JSON (and the chart),
prints the ratios and stops what it started. Timings are never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.stats import latency_summary, percentile

ROOT = Path(__file__).resolve().parents[2]
N_LATENCY, N_THROUGHPUT, STORED = 30, 200, 500

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess,
                                                                Path]:
    out = tmp_path_factory.mktemp("bench-results")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--n-latency", str(N_LATENCY), "--n-throughput",
         str(N_THROUGHPUT), "--stored-tasks", str(STORED), "--warmup", "5", "--workers", "2",
         "--timeout", "240", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    return proc, out


def test_run_succeeds_and_prints_the_ratios(tiny_run):
    proc, _ = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("fnrelay/Parsl", "fnrelay/AMQP", "throughput (tasks/s)", "latency p99",
                    "median per hop"):
        assert heading in proc.stdout


def test_fnrelay_latency_is_broken_down_by_hop(tiny_run):
    """Every hop of docs/performance.md's breakdown is there, none negative: the history reads
    forward in time (one machine, one clock)."""
    from benchmarks.hops import HOPS

    _, out = tiny_run
    hops = json.loads((out / "latest.json").read_text())["fnrelay"]["hops_ms"]
    assert list(hops) == [name for name, _, _ in HOPS]
    assert all(ms >= 0 for ms in hops.values()), hops


def test_every_system_ran_every_task_correctly(tiny_run):
    _, out = tiny_run
    result = json.loads((out / "latest.json").read_text())
    assert result["errors"] == {}
    for system in ("fnrelay", "parsl", "amqp"):
        latency, throughput = result[system]["latency"], result[system]["throughput"]
        assert latency["correct"] is True and throughput["correct"] is True, system
        assert latency["n"] == N_LATENCY and throughput["n"] == N_THROUGHPUT
        assert latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        assert throughput["tasks_per_s"] > 0


def test_the_raw_round_trip_has_fnrelays_message_size_and_guarantees(tiny_run):
    _, out = tiny_run
    amqp = json.loads((out / "latest.json").read_text())["amqp"]
    from benchmarks.tasks import task_message_size

    assert amqp["message_bytes"] == task_message_size()
    assert amqp["settings"]["persistent"] and amqp["settings"]["durable_queues"]
    assert amqp["settings"]["confirms"] == "asynchronous"


def test_ratios_targets_and_memory_are_complete(tiny_run):
    _, out = tiny_run
    result = json.loads((out / "latest.json").read_text())
    assert all(isinstance(v, float) for v in result["ratios"].values()), result["ratios"]
    keys = {t["key"] for t in result["targets"]}
    assert {"throughput_vs_parsl", "p50_vs_parsl", "p99_vs_p50", "broker_rss_stored_mb",
            "endpoint_idle_mb"} <= keys
    stored = next(t for t in result["targets"] if t["key"] == "broker_rss_stored_mb")
    assert stored["met"] is None  # fewer than 100,000 stored tasks: no verdict
    mem = result["memory"]
    assert mem["stored"]["tasks"] == STORED and mem["stored"]["db_mb"] > 0
    for probe in ("endpoint_idle", "endpoint_peak", "broker_peak"):
        assert mem[probe]["rss_mb"] > 0 and mem[probe]["peak_rss_mb"] >= mem[probe]["rss_mb"]


def test_the_run_says_how_independent_the_machines_cpus_are(tiny_run):
    """The tail depends on it (docs/performance.md, round 8): recorded and printed."""
    proc, out = tiny_run
    cross = json.loads((out / "latest.json").read_text())["machine"]["cpu_interference"]
    assert isinstance(cross, float) and cross > 0  # CI machines have two CPUs or more
    assert f"work on one CPU slows a loop on another {cross:.2f}x" in proc.stdout


def test_results_are_written_with_a_timestamped_copy_and_a_chart(tiny_run):
    _, out = tiny_run
    stamped = [p for p in out.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1
    assert stamped[0].read_text() == (out / "latest.json").read_text()
    import matplotlib  # noqa: F401 - a missing chart library is a failure, not a skip
    assert (out / "latest.png").read_bytes().startswith(b"\x89PNG")


def test_percentiles_interpolate_between_ranks():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 90) == 3.0
    summary = latency_summary([0.001, 0.002, 0.003])
    assert summary["p50_ms"] == pytest.approx(2.0) and summary["n"] == 3
