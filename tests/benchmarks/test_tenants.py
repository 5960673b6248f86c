"""`python -m benchmarks tenants`, run tiny: it starts its shared endpoints, runs every user's
tasks, times the lone calls idle and under a flood, writes the JSON and the table, and stops
what it started. Timings are never asserted; the fields docs/performance.md reads are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_tiny_tenants_run_writes_throughput_cpu_growth_and_fairness(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "tenants", "--users", "4", "--endpoints", "2",
         "--tasks", "200", "--flood", "300", "--calls", "3", "--timeout", "120",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shared endpoint: lone p50" in proc.stdout
    result = json.loads((tmp_path / "tenants-latest.json").read_text())
    tp = result["throughput"]
    assert (tp["users"], tp["endpoints"], tp["tasks"], tp["failed"]) == (4, 2, 200, 0)
    assert tp["broker_cpu_s"] > 0 and tp["db_growth_bytes"] > 0
    fair = result["fairness"]
    assert fair["flood"] == 300 and set(fair["cases"]) == {"separate", "shared"}
    for case in fair["cases"].values():
        assert case["idle_p50_ms"] > 0 and case["flooded_p50_ms"] > 0 and case["calls"] == 3
        for state in ("idle_steps_p50_ms", "flooded_steps_p50_ms"):  # where the time went
            steps = case[state]
            assert {"received", "success", "sdk_result"} <= set(steps), steps
            assert 0 <= steps["received"] <= steps["success"] <= steps["sdk_result"], steps


def test_a_bad_option_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "tenants", "--endpoints", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--endpoints >= 2" in proc.stderr and "Traceback" not in proc.stderr
