"""Many tenants on one broker: aggregate throughput, broker CPU per task, database growth, and
fairness while one user floods.

`python -m benchmarks tenants` starts a fresh local stack, stops its own endpoint, and starts
`--endpoints` endpoints (one worker each) owned by as many users, each shared with every other
user through `allowed_functions` (cheaper on two cores than a multi-user endpoint, which would
start a child endpoint process per user and endpoint). Then:

* throughput: `--users` users, each with an Executor on endpoint (user mod endpoints), submit
  `--tasks` no-op tasks between them at once; the broker's CPU seconds (/proc/PID/stat, the
  broker process alone) over the tasks done, and the database's growth (SQLite file + WAL)
  over those tasks, scaled linearly to a million stored tasks;
* fairness: a flooder queues `--flood` tasks (100,000 by default; `--scale` shrinks it) on the
  endpoint it owns (so on the direct path, its records reaching the broker afterwards);
  meanwhile a lone user's calls (one at a time) on another endpoint (case 1: separate
  endpoints) and on the flooder's endpoint (case 2: shared) are timed, and their p50 set
  against the same calls before the flood (the target is <= 2x). The flood's progress over
  the window is reported too: neither side starves. The first flooded call of each case is
  traced (`first_call_trace`): its task history's steps and the SDK's result, in ms after the
  submit, and the messages ready in the broker's inbound queues just before it; every lone
  call's steps give their medians (`idle_steps_p50_ms`, `flooded_steps_p50_ms`), which show
  which step a flood makes slower.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cpu import cpu_seconds
from benchmarks.memory import db_size_mb
from benchmarks.stack import Stack, local_stack
from benchmarks.tasks import noop, portable

FULL_FLOOD = 100_000


def _sleepy(ms: float) -> float:
    import time

    time.sleep(ms / 1000)
    return ms


#: The flood's task: a short sleep, so that the flood stays queued while the lone calls run.
sleepy = portable(_sleepy)
sleepy.__name__ = sleepy.__qualname__ = "sleepy"


@dataclass
class Tenants:
    """A stack with `endpoints` shared endpoints and a pool of users (tokens)."""

    stack: Stack
    endpoint_ids: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)  # the tokens of the endpoints' owners

    def client(self, token: str) -> Any:
        from fnrelay import Client

        return Client(self.stack.broker_url, token)

    def add_user(self, name: str) -> str:
        """A new broker user's token (`fnrelay-broker user add` on the stack's database)."""
        from fnrelay.config import ENV_BROKER_DB
        from fnrelay.devstack.processes import executable

        out = subprocess.run([executable("fnrelay-broker"), "user", "add", name],
                             capture_output=True, text=True,
                             env={**os.environ, ENV_BROKER_DB: f"sqlite:///{self.stack.db_path}"})
        if out.returncode != 0 or not out.stdout.strip():
            raise RuntimeError(f"cannot add broker user {name}: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1]


@contextmanager
def tenants_stack(endpoints: int, log: Any) -> Iterator[Tenants]:
    """A local stack whose own endpoint is stopped, with `endpoints` one-worker endpoints of
    as many owners, each sharing `noop` and `sleepy` with everyone."""
    from fnrelay.devstack.services import LocalEndpoint

    with local_stack(workers=1, log=log) as stack, ExitStack() as started:
        stack.endpoint.stop()
        t = Tenants(stack)
        for i in range(endpoints):
            token = t.add_user(f"owner{i}-{uuid.uuid4().hex[:6]}")
            ep = LocalEndpoint(stack.dir / f"tenant-{i}", f"shared{i}", stack.broker_url,
                               token, log=log).configure(max_workers=1)
            ep.start()
            started.callback(ep.stop)
            owner = t.client(token)
            allowed = [owner.register_function(f) for f in (noop, sleepy)]
            owner.put(f"endpoints/{ep.endpoint_id}", data={
                "name": f"shared{i}", "metadata": {"allowed_functions": allowed}})
            t.endpoint_ids.append(ep.endpoint_id)
            t.owners.append(token)
        yield t


def _db_bytes(t: Tenants) -> float:
    mb = db_size_mb(t.stack.db_path)
    if mb is None:
        raise RuntimeError("the stack's database is not SQLite: cannot size it")
    return mb * 1024 * 1024


def throughput(t: Tenants, users: int, tasks: int, timeout: float) -> dict[str, Any]:
    """`users` Executors (user i on endpoint i mod E) submit `tasks` no-ops between them."""
    from fnrelay import Executor

    tokens = [t.add_user(f"tenant{i}-{uuid.uuid4().hex[:6]}") for i in range(users)]
    per_user = [tasks // users + (i < tasks % users) for i in range(users)]
    with ExitStack() as stack:
        exes = [stack.enter_context(Executor(t.endpoint_ids[i % len(t.endpoint_ids)],
                                             client=t.client(tok)))
                for i, tok in enumerate(tokens)]
        cf.wait([ex.submit(noop, -1) for ex in exes], timeout=timeout)  # warm: groups, fns
        time.sleep(1.0)  # the warm-up's records settle before the counters start
        db0, cpu0, t0 = _db_bytes(t), cpu_seconds(t.stack.broker_pid, False), time.monotonic()
        futures = [ex.submit(noop, j) for ex, n in zip(exes, per_user, strict=True)
                   for j in range(n)]
        done, not_done = cf.wait(futures, timeout=timeout)
        seconds = time.monotonic() - t0
        cpu = cpu_seconds(t.stack.broker_pid, False) - cpu0
        if not_done:
            raise TimeoutError(f"{len(not_done)}/{tasks} tasks unfinished after {timeout:.0f}s")
        wrong = sum(f.exception() is not None for f in futures)
    time.sleep(2.0)  # the broker's last records and history commit
    grown = _db_bytes(t) - db0
    return {"users": users, "endpoints": len(t.endpoint_ids), "tasks": tasks,
            "failed": wrong, "seconds": seconds, "tasks_per_s": tasks / seconds,
            "broker_cpu_s": cpu, "broker_cpu_ms_per_task": 1000 * cpu / tasks,
            "db_growth_bytes": grown, "db_bytes_per_task": grown / tasks,
            "db_gb_per_million_tasks": grown / tasks * 1e6 / 1e9,
            "db_note": f"SQLite file + WAL growth over {tasks:,} finished tasks (arguments, "
                       "results, history), scaled linearly to 1,000,000"}


@dataclass
class Calls:
    """Lone calls made one at a time: each one's seconds, and its task id with the wall clock
    at its submit and at its result (to place its history's steps, `step_medians`)."""

    seconds: list[float] = field(default_factory=list)
    marks: list[tuple[str, float, float]] = field(default_factory=list)


def lone_calls(ex: Any, n: int, timeout: float) -> Calls:
    """`n` no-op calls made one at a time."""
    out = Calls()
    for i in range(n):
        t0, wall = time.monotonic(), time.time()
        future = ex.submit(noop, i)
        if future.result(timeout=timeout) != i:
            raise RuntimeError("a lone call returned a wrong value")
        out.seconds.append(time.monotonic() - t0)
        out.marks.append((future.task_id, wall, time.time()))
    return out


def step_medians(client: Any, calls: Calls) -> dict[str, float]:
    """Where the calls' time went: for each step of the task history (the broker's and the
    endpoint's clocks, one machine here) and the SDK's result, the median ms after the
    submit. Read after the timed calls, so the reads are not timed."""
    steps: dict[str, list[float]] = {}
    for task_id, t0, t1 in calls.marks:
        for h in client.task_record(task_id)["history"]:
            steps.setdefault(h["status"], []).append(1000 * (h["time"] - t0))
        steps.setdefault("sdk_result", []).append(1000 * (t1 - t0))
    return {k: round(statistics.median(v), 1) for k, v in steps.items()}


def fairness(t: Tenants, flood: int, n_calls: int, task_ms: float, timeout: float,
             log: Any) -> dict[str, Any]:
    """The lone user's p50 on a separate and on the flooder's endpoint, idle and flooded."""
    from fnrelay import Executor

    flooder = t.client(t.owners[0])  # floods the endpoint it owns (and shares)
    lone = t.client(t.add_user(f"lone-{uuid.uuid4().hex[:6]}"))
    flooded, other = t.endpoint_ids[0], t.endpoint_ids[1]
    flood_ex = Executor(flooded, client=flooder)
    try:
        with Executor(other, client=lone) as sep_ex, Executor(flooded, client=lone) as shared_ex:
            flood_ex.submit(sleepy, 0).result(timeout=timeout)
            lone_calls(sep_ex, 10, timeout)
            lone_calls(shared_ex, 10, timeout)
            idle = {"separate": lone_calls(sep_ex, n_calls, timeout),
                    "shared": lone_calls(shared_ex, n_calls, timeout)}
            idle_steps = {case: step_medians(lone, c) for case, c in idle.items()}
            log(f"flooding {flood:,} tasks of {task_ms:g} ms")
            futures = [flood_ex.submit(sleepy, task_ms) for _ in range(flood)]
            _wait_submitted(futures, timeout)
            before = sum(f.done() for f in futures)
            log(f"flood with the broker ({before:,} done): timing the lone calls")
            inbound = _inbound_depth(t.stack.amqp_url)
            busy = {"separate": _flooded_calls(sep_ex, futures, n_calls, timeout, inbound),
                    "shared": _flooded_calls(shared_ex, futures, n_calls, timeout, inbound)}
            after = sum(f.done() for f in futures)
            busy_steps = {case: step_medians(lone, c[0]) for case, c in busy.items()}
    finally:
        # What the flood left goes down with the stack: cancelling it would cost two
        # requests per task, and waiting for it the whole flood.
        flood_ex.shutdown(wait=False, cancel_futures=True)
    cases = {}
    for case in ("separate", "shared"):
        calls, first, unfinished, trace = busy[case]
        p_idle = statistics.median(idle[case].seconds)
        p_busy = statistics.median(calls.seconds)
        cases[case] = {"idle_p50_ms": 1000 * p_idle, "flooded_p50_ms": 1000 * p_busy,
                       "ratio": p_busy / p_idle, "within_2x": p_busy <= 2 * p_idle,
                       "flooded_max_ms": 1000 * max(calls.seconds), "calls": n_calls,
                       "idle_steps_p50_ms": idle_steps[case],
                       "flooded_steps_p50_ms": busy_steps[case],
                       "first_call_ms": 1000 * first, "first_call_trace": trace,
                       "flood_unfinished_after_first_call": unfinished}
    return {"flood": flood, "flood_task_ms": task_ms, "cases": cases,
            "flood_done_before_window": before, "flood_done_after_window": after,
            "flood_unfinished_after_window": flood - after}


def _flooded_calls(ex: Any, flood: list[Any], n: int, timeout: float, inbound: Any
                   ) -> tuple[Calls, float, int, dict[str, Any]]:
    """The first lone call under the flood (a FIFO queue makes it wait for the whole flood
    ahead of it, which the later calls' p50 would hide) and how much of the flood was left
    then, where it waited (`trace`), and `n` more calls' timings."""
    ready = inbound()
    t0 = time.time()
    future = ex.submit(noop, -2)
    future.result(timeout=timeout)
    t1 = time.time()
    unfinished = sum(not f.done() for f in flood)
    trace = _trace(ex.client.task_record(future.task_id), t0, t1)
    trace["broker_inbound_ready_before"] = ready
    return lone_calls(ex, n, timeout), t1 - t0, unfinished, trace


def _trace(record: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """Where a call's time went: each step of its history (the broker's and the endpoint's
    clocks, one machine here) in ms after the submit, and the result's arrival at the SDK."""
    steps = {h["status"]: round(1000 * (h["time"] - t0), 1) for h in record["history"]}
    return {"steps_ms": steps, "sdk_result_ms": round(1000 * (t1 - t0), 1)}


def _inbound_depth(amqp_url: str) -> Any:
    """A probe: messages ready in each of the broker's inbound queues (a passive declare as
    RabbitMQ's administrator; unacked ones, in the broker's prefetch, are not counted)."""
    import pika

    from fnrelay import wire

    def probe() -> dict[str, int]:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            ch, out = conn.channel(), {}
            for q in wire.BROKER_INBOUND_QUEUES:
                out[q] = ch.queue_declare(q, passive=True).method.message_count
            return out
        finally:
            conn.close()
    return probe


def _wait_submitted(futures: list[Any], timeout: float) -> None:
    """Until the broker has accepted every one of `futures` (each has a task id)."""
    deadline = time.monotonic() + timeout
    while not all(f.task_id for f in futures):
        if time.monotonic() > deadline:
            raise TimeoutError("the flood's submits did not finish")
        time.sleep(0.2)


def render(result: dict[str, Any]) -> str:
    lines = []
    if tp := result.get("throughput"):
        lines += [f"{tp['users']} users, {tp['endpoints']} shared endpoints (1 worker each), "
                  f"{tp['tasks']:,} tasks: {tp['tasks_per_s']:.0f} tasks/s, broker CPU "
                  f"{tp['broker_cpu_ms_per_task']:.2f} ms/task, database "
                  f"{tp['db_bytes_per_task']:.0f} B/task = "
                  f"{tp['db_gb_per_million_tasks']:.2f} GB per million tasks"]
    if fr := result.get("fairness"):
        lines.append(f"fairness: {fr['flood']:,} tasks of {fr['flood_task_ms']:g} ms queued "
                     f"by one user; flood done {fr['flood_done_before_window']:,} -> "
                     f"{fr['flood_done_after_window']:,} over the lone calls")
        for case, c in fr["cases"].items():
            lines.append(f"  {case:>8} endpoint: lone p50 idle {c['idle_p50_ms']:.1f} ms, "
                         f"flooded {c['flooded_p50_ms']:.1f} ms (max "
                         f"{c['flooded_max_ms']:.1f}): {c['ratio']:.2f}x "
                         f"({'within' if c['within_2x'] else 'beyond'} 2x); first call "
                         f"{c['first_call_ms']:.1f} ms, flood left then "
                         f"{c['flood_unfinished_after_first_call']:,}")
            lines.append(f"           first call's trace: {c['first_call_trace']}")
            lines.append(f"           steps, p50 ms after the submit: idle "
                         f"{c['idle_steps_p50_ms']}, flooded {c['flooded_steps_p50_ms']}")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks tenants", description=(
        __doc__ or "").strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20, help="users with an Executor each (20)")
    p.add_argument("--endpoints", type=int, default=5, help="shared endpoints (5; >= 2)")
    p.add_argument("--tasks", type=int, default=10_000,
                   help="tasks of the throughput run, all users together (10000)")
    p.add_argument("--flood", type=int, default=FULL_FLOOD,
                   help=f"tasks the flooder queues ({FULL_FLOOD}; times --scale)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply --tasks and --flood by this for a quick run (e.g. 0.02)")
    p.add_argument("--flood-task-ms", type=float, default=5.0,
                   help="how long each flood task sleeps, in ms (5)")
    p.add_argument("--calls", type=int, default=30, help="lone calls per case and state (30)")
    p.add_argument("--only", choices=("throughput", "fairness"), help="run one part only")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per wait (1800)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="where tenants-<time>.json and tenants-latest.json go")
    a = p.parse_args(argv)
    if a.endpoints < 2 or a.users < 1 or a.calls < 1 or not 0 < a.scale <= 1:
        p.error("need --endpoints >= 2, --users and --calls >= 1, 0 < --scale <= 1")
    a.tasks, a.flood = max(a.users, int(a.tasks * a.scale)), max(1, int(a.flood * a.scale))
    return a


def main(argv: list[str]) -> int:
    from benchmarks.harness import _machine, log

    a = parse(argv)
    result: dict[str, Any] = {
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(), "options": {k: str(v) if isinstance(v, Path) else v
                                           for k, v in vars(a).items()}}
    with tenants_stack(a.endpoints, log) as t:
        if a.only in (None, "throughput"):
            log(f"throughput: {a.users} users, {a.tasks:,} tasks")
            result["throughput"] = throughput(t, a.users, a.tasks, a.timeout)
        if a.only in (None, "fairness"):
            result["fairness"] = fairness(t, a.flood, a.calls, a.flood_task_ms, a.timeout, log)
    result["load_avg"] = os.getloadavg()
    print(render(result))
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (a.out / f"tenants-{stamp}.json", a.out / "tenants-latest.json"):
        path.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
