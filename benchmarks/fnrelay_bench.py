"""fnrelay through the whole stack: SDK -> broker -> RabbitMQ -> endpoint -> result back."""

from __future__ import annotations

import concurrent.futures as cf
import time
from typing import Any

from benchmarks import hops
from benchmarks.stack import Stack
from benchmarks.stats import clock, latency_summary, throughput_summary, time_calls
from benchmarks.tasks import noop

STORE_BATCH = 1000  # tasks per POST /v1/submit when filling the database


def lone_calls(ex: Any, n: int, warmup: int, timeout: float
               ) -> tuple[list[float], bool, list[tuple[str, float, float]]]:
    """`n` timed no-op calls one at a time through Executor `ex`, after `warmup` untimed ones:
    (timings, all correct, (task id, submitted, resolved) wall times of the timed calls)."""
    calls: list[tuple[str, float, float]] = []

    def one_call(i: int) -> Any:
        t0 = time.time()
        future = ex.submit(noop, i)
        value = future.result(timeout=timeout)
        calls.append((str(future.task_id), t0, time.time()))
        return value

    timings, correct = time_calls(one_call, n, warmup)
    return timings, correct, calls[warmup:]


def run(stack: Stack, n_latency: int, n_throughput: int, warmup: int = 50,
        timeout: float = 300.0) -> dict[str, Any]:
    """Latency (one call at a time, warm) and throughput (n calls, first submit to last
    result) through one fnrelay.Executor."""
    from fnrelay import Executor

    client = stack.client()
    with Executor(stack.endpoint_id, client=client) as ex:
        timings, lat_ok, calls = lone_calls(ex, n_latency, warmup, timeout)
        t0 = clock()
        futures = [ex.submit(noop, i) for i in range(n_throughput)]
        done, not_done = cf.wait(futures, timeout=timeout)
        seconds = clock() - t0
        if not_done:
            for f in not_done:
                f.cancel()
            raise TimeoutError(f"fnrelay: {len(not_done)}/{n_throughput} tasks not done after "
                               f"{timeout:.0f}s")
        thr_ok = all(f.exception() is None and f.result() == i for i, f in enumerate(futures))
    return {
        "settings": {"api": "fnrelay.Executor", "batch_size": ex.batch_size},
        "latency": {**latency_summary(timings), "correct": lat_ok},
        "hops_ms": hops.breakdown(client, calls),
        "throughput": throughput_summary(n_throughput, seconds, thr_ok),
    }


def store_tasks(stack: Stack, count: int, timeout: float = 600.0) -> dict[str, Any]:
    """Submit `count` no-op tasks over REST to a registered endpoint that never runs, so they
    stay stored (state waiting-for-endpoint) in the broker's database; returns the rate."""
    from fnrelay.client import task_entry

    client = stack.client()
    offline = client.post("endpoints", data={"name": "bench-offline", "metadata": {}})[
        "endpoint_id"]
    function_id = client.register_function(noop)
    t0 = deadline = clock()
    deadline += timeout
    stored = 0
    while stored < count:
        size = min(STORE_BATCH, count - stored)
        tasks = [task_entry(function_id, (stored + i,), {}) for i in range(size)]
        answer = client.submit(offline, tasks)
        if len(answer["task_ids"]) != size:
            raise RuntimeError(f"the broker accepted {len(answer['task_ids'])} of {size} tasks")
        stored += size
        if clock() > deadline:
            raise TimeoutError(f"stored {stored}/{count} tasks in {timeout:.0f}s")
    seconds = clock() - t0
    time.sleep(1.0)  # let the outbox publisher settle before memory is read
    return {"tasks": count, "seconds": seconds, "tasks_per_s": count / seconds,
            "endpoint_id": offline}
