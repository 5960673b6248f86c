"""`python -m benchmarks latency`, run tiny: it starts its delayed stack, measures every D, counts
and names each call's round trips per link, writes the JSON and the table, and stops what it
started. Timings are never asserted; what docs/performance.md's round-trip section reads is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.delay_stack import LINKS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_tiny_latency_run_writes_figures_and_round_trips(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "latency", "--delays", "0,5", "--n-latency", "2",
         "--n-throughput", "50", "--repeats", "1", "--timeout", "60", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round trips per link" in proc.stdout
    result = json.loads((tmp_path / "latency-latest.json").read_text())
    zero, five = result["rows"]
    assert (zero["delay_ms"], five["delay_ms"]) == (0, 5)
    for row in (zero, five):
        assert set(row["warm_round_trips"]) == set(LINKS)
        assert row["tasks_per_s"] > 0
    assert "warm_extra_ms" in five and "cold_within_bound" in five
    # The delay line's own lateness is measured, and the figures are given net of it.
    assert 0 <= five["proxy_late_ms"] < 5
    assert five["warm_net_extra_ms"] == pytest.approx(five["warm_extra_ms"]
                                                      - 4 * five["proxy_late_ms"])
    assert "ms late per crossing" in proc.stdout
    # A fresh process talks to the broker (its group; its first task goes over REST while its
    # RabbitMQ connections, already begun, open: round 18).
    cold = five["cold_conversation"]
    assert any("POST /v1/task_groups" in line for line in cold["sdk-broker"]), cold
    assert any("POST /v1/submit" in line for line in cold["sdk-broker"]), cold
    assert any("protocol header" in line for line in cold["sdk-rabbitmq"]), cold
    # A warm call goes the direct path: no HTTP on its way.
    assert five["warm_round_trips"]["sdk-broker"] == 0, five["warm_conversation"]


def test_delays_without_a_baseline_are_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "latency", "--delays", "5,25"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--delays must include 0" in proc.stderr and "Traceback" not in proc.stderr
