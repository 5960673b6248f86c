"""The peer: the same no-op latency and throughput on Parsl's HighThroughputExecutor, local.

HTEX as shipped (its defaults, encryption included) with a LocalProvider block of one node and
the same worker count as the fnrelay endpoint; no broker, no database, no durability.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.stats import clock, latency_summary, throughput_summary, time_calls
from benchmarks.tasks import noop


def _config(workers: int, run_dir: Path) -> Any:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    htex = HighThroughputExecutor(
        label="bench_htex", max_workers_per_node=workers, cores_per_worker=1,
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        worker_logdir_root=str(run_dir))
    return Config(executors=[htex], run_dir=str(run_dir), strategy="none",
                  initialize_logging=False)


@contextmanager
def _venv_on_path() -> Iterator[None]:
    """HTEX starts `interchange.py` and `process_worker_pool.py` from PATH: use this venv's."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


def run(workers: int, n_latency: int, n_throughput: int, warmup: int = 50,
        timeout: float = 300.0) -> dict[str, Any]:
    """Latency and throughput of `noop` on a fresh local HTEX; always shuts it down."""
    import parsl
    from parsl.app.app import python_app

    logging.getLogger("parsl").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="fnrelay-bench-parsl-") as tmp, _venv_on_path():
        dfk = parsl.load(_config(workers, Path(tmp)))
        try:
            app = python_app(noop, executors=["bench_htex"])
            timings, lat_ok = time_calls(lambda i: app(i).result(timeout=timeout),
                                         n_latency, warmup)
            t0 = clock()
            futures = [app(i) for i in range(n_throughput)]
            done, not_done = cf.wait(futures, timeout=timeout)
            seconds = clock() - t0
            if not_done:
                raise TimeoutError(f"Parsl: {len(not_done)}/{n_throughput} tasks not done "
                                   f"after {timeout:.0f}s")
            thr_ok = all(f.result() == i for i, f in enumerate(futures))
        finally:
            dfk.cleanup()
            parsl.clear()
    return {
        "settings": {"executor": "HighThroughputExecutor", "provider": "LocalProvider",
                     "workers": workers, "parsl_version": parsl.__version__},
        "latency": {**latency_summary(timings), "correct": lat_ok},
        "throughput": throughput_summary(n_throughput, seconds, thr_ok),
    }
