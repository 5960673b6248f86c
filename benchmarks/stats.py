"""Latency summaries and timing helpers shared by every benchmark."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

clock = time.perf_counter


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max in milliseconds, and the sample count."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def time_calls(call: Callable[[int], Any], n: int, warmup: int) -> tuple[list[float], bool]:
    """Run call(i) `warmup` times untimed, then `n` times timed; call(i) must return i.

    Returns the timings and whether every result was right.
    """
    correct = True
    for i in range(warmup):
        correct &= call(i) == i
    timings = []
    for i in range(n):
        t0 = clock()
        value = call(i)
        timings.append(clock() - t0)
        correct &= value == i
    return timings, correct


def throughput_summary(n: int, seconds: float, correct: bool) -> dict[str, Any]:
    return {"n": n, "seconds": seconds, "tasks_per_s": n / seconds if seconds else 0.0,
            "correct": bool(correct)}
