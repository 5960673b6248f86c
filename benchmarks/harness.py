"""One benchmark run: the peer, fnrelay, the transport limit and memory, in that order.

Each phase has its own time limit; a phase that fails is recorded under "errors" and the others
still run, so a run always ends with a complete report and with everything it started stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import amqp_bench, fnrelay_bench, memory, parsl_bench, report, vcpu
from benchmarks.stack import local_stack
from benchmarks.tasks import task_message_size

SCHEMA = 1
PHASES = ("parsl", "fnrelay", "amqp", "memory")


@dataclass
class Options:
    n_latency: int = 500
    n_throughput: int = 10_000
    workers: int = 2
    warmup: int = 50
    stored_tasks: int = 100_000
    timeout: float = 600.0  # seconds per phase
    out: Path = Path("benchmarks/results")
    chart: bool = True
    profile: Path | None = None  # py-spy the stack during fnrelay's throughput run
    phases: tuple[str, ...] = PHASES
    quick: bool = False


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _phase(result: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one phase, timing it; a failure is recorded, not raised."""
    log(f"{name}: start")
    t0 = time.monotonic()
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - the report says which phase failed and why
        result["errors"][name] = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED: {e}\n{traceback.format_exc()}")
        return None
    log(f"{name}: done in {time.monotonic() - t0:.1f}s")
    return value


def _machine() -> dict[str, Any]:
    """What the numbers were measured on; `cpu_interference` (benchmarks.vcpu: how much a
    loop on one CPU slows beside work on another, 1.0 = not at all) says how much background
    work anywhere on the machine reaches a lone call's tail."""
    try:
        interference = vcpu.interference()
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        log(f"cpu interference probe failed: {e}")
        interference = None
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "cpu_interference": interference}


def run(opts: Options) -> dict[str, Any]:
    """Measure everything `opts.phases` asks for; returns the result (also written to disk)."""
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "errors": {},
    }
    if "parsl" in opts.phases:
        result["parsl"] = _phase(result, "parsl", lambda: parsl_bench.run(
            opts.workers, opts.n_latency, opts.n_throughput, opts.warmup, opts.timeout))
    if set(opts.phases) & {"fnrelay", "amqp", "memory"}:
        try:
            with local_stack(opts.workers, log) as stack:
                _stack_phases(result, opts, stack)
        except Exception as e:  # noqa: BLE001 - start-up or tear-down of the stack failed
            result["errors"]["stack"] = f"{type(e).__name__}: {e}"
            log(f"stack: FAILED: {e}")
    result["ratios"] = report.ratios(result)
    result["targets"] = report.targets(result)
    return result


def _stack_phases(result: dict[str, Any], opts: Options, stack: Any) -> None:
    mem: dict[str, Any] = {}
    if "memory" in opts.phases:
        time.sleep(2.0)  # let the idle endpoint finish starting its workers
        mem["endpoint_idle"] = memory.process_memory(stack.endpoint_pid)
        result["memory"] = mem
    if "fnrelay" in opts.phases:
        result["fnrelay"] = _phase(result, "fnrelay", lambda: _fnrelay(opts, stack, result))
    if "amqp" in opts.phases:
        result["amqp"] = _phase(result, "amqp", lambda: amqp_bench.run(
            stack.amqp_url, task_message_size(), opts.n_latency, opts.n_throughput,
            opts.warmup, opts.timeout))
    if "memory" in opts.phases:
        mem["broker_peak"] = memory.process_memory(stack.broker_pid)
        mem["endpoint_peak"] = memory.process_memory(stack.endpoint_pid)
        stored = _phase(result, "memory", lambda: fnrelay_bench.store_tasks(
            stack, opts.stored_tasks, opts.timeout))
        if stored is not None:
            broker = memory.process_memory(stack.broker_pid)
            mem["stored"] = {
                "tasks": stored["tasks"], "seconds": stored["seconds"],
                "tasks_per_s": stored["tasks_per_s"], "broker_rss_mb": broker["rss_mb"],
                "broker_peak_rss_mb": broker["peak_rss_mb"],
                "db_mb": memory.db_size_mb(stack.db_path)}
            if opts.stored_tasks < 100_000:
                mem["stored"]["note"] = (f"only {opts.stored_tasks:,} stored tasks (not "
                                         "100,000): the broker RSS target is not judged")


def _fnrelay(opts: Options, stack: Any, result: dict[str, Any]) -> dict[str, Any]:
    if opts.profile is None:
        return fnrelay_bench.run(stack, opts.n_latency, opts.n_throughput, opts.warmup,
                                 opts.timeout)
    from benchmarks import profile

    pids = {"broker": stack.broker_pid, "endpoint": stack.endpoint_pid, "sdk": os.getpid()}
    with profile.sampling(pids, opts.profile, frozenset({"endpoint"})) as files:
        value = fnrelay_bench.run(stack, opts.n_latency, opts.n_throughput, opts.warmup,
                                  opts.timeout)
    result["profile"] = {name: profile.summary(path) for name, path in files.items()}
    return value


def save(result: dict[str, Any], opts: Options) -> list[Path]:
    """The JSON files and, if asked and possible, the PNG chart."""
    path = report.write(result, opts.out)
    written = [path, opts.out / "latest.json"]
    if opts.chart:
        try:
            from benchmarks import chart
        except ImportError:  # pragma: no cover - matplotlib is optional
            log("no chart: matplotlib is not installed (pip install matplotlib)")
            return written
        png = chart.draw(result, path.with_suffix(".png"))
        chart.draw(result, opts.out / "latest.png")
        written += [png, opts.out / "latest.png"]
    return written
