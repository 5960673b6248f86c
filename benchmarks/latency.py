"""Round trips on the critical path: a lone call across links with a one-way delay D.

`python -m benchmarks latency --delays 0,5,25` starts a stack whose four client links pass
through delay proxies (benchmarks.delay_stack) and, for each D (interleaved, `--repeats` times,
medians reported), measures a warm lone call, the first call of a fresh process (its function
registration, task group and connections included) and the throughput of many tasks. Each
figure is set against the physical minimum: latency(D) - latency(0) <= 1.1 x crossings x D,
where a warm call must cross each link of its path once each way (SDK-RabbitMQ and
endpoint-RabbitMQ: 4 crossings), and a fresh process must also open a connection to the broker
and ask it once (4 more). The delay line's own lateness (its timers wake on a millisecond tick)
is measured in the same runs, and the figures are also given net of it. The proxies count
each call's round trips per link (a request turn after a response) and name what each
carried, so the table says where they come from.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.delay_proxy import UP, Chunk, Link
from benchmarks.delay_stack import LINKS, DelayedStack, delayed_stack
from benchmarks.tasks import noop

WARM_CROSSINGS, COLD_CROSSINGS = 4, 8
SLACK = 1.1  # the issue's allowance over the physical minimum

#: A fresh process's first call; prints its own start and end on the shared monotonic clock.
#: The modules the call will use are imported first: the figure is the call's round trips and
#: work, not Python's start-up.
COLD_SCRIPT = """
import json, sys, time
import pika, requests
import fnrelay.client, fnrelay.direct, fnrelay.executor, fnrelay.serialize
import fnrelay.executor.transport, fnrelay.executor.watcher
from fnrelay import Client, Executor
def noop(x):
    return x
t0 = time.monotonic()
with Executor(sys.argv[2], client=Client(sys.argv[1], sys.argv[3])) as ex:
    value = ex.submit(noop, 7).result(timeout=float(sys.argv[4]))
    t1 = time.monotonic()
print(json.dumps({"t0": t0, "t1": t1, "ok": value == 7}))
"""


def turns_between(links: dict[str, Link], t0: float, t1: float) -> dict[str, list[Chunk]]:
    """The chunks each link carried in [t0, t1]."""
    return {name: [c for c in list(link.chunks) if t0 <= c.time <= t1]
            for name, link in links.items()}


def round_trips(turns: dict[str, list[Chunk]]) -> dict[str, int]:
    """Request turns per link: each client burst that follows a response (or opens a link)."""
    return {name: sum(c.turn and c.direction == UP for c in cs) for name, cs in turns.items()}


def conversation(turns: dict[str, list[Chunk]]) -> dict[str, list[str]]:
    """Per link, in order, what each connection's turn carried: '>' client to server, '<'
    back, '#n' the connection (a link may have several)."""
    out: dict[str, list[str]] = {}
    for name, chunks in turns.items():
        said: list[tuple[int, str, list[str]]] = []
        for c in chunks:
            if c.turn or not said or said[-1][0] != c.conn:
                said.append((c.conn, c.direction, []))
            said[-1][2].extend(c.labels)
        if said:
            out[name] = [f"#{conn} {'>' if d == UP else '<'} "
                         + ", ".join(dict.fromkeys(labels)) for conn, d, labels in said]
    return out


def warm_calls(stack: DelayedStack, ex: Any, n: int, timeout: float) -> dict[str, Any]:
    """`n` lone calls one at a time; the median latency and round trips of each link."""
    delay = max(link.delay for link in stack.links.values())
    timings, trips, talks = [], [], []
    for i in range(n):
        t0 = time.monotonic()
        ok = ex.submit(noop, i).result(timeout=timeout) == i
        t1 = time.monotonic()
        if not ok:
            raise RuntimeError(f"lone call {i} returned a wrong value")
        timings.append(t1 - t0)
        turns = turns_between(stack.links, t0, t1)
        trips.append(round_trips(turns))
        talks.append(json.dumps(conversation(turns)))
        time.sleep(max(0.005, 3 * delay))  # acks and confirms settle off the next call's way
    typical = collections.Counter(talks).most_common(1)[0][0]
    return {"p50_ms": 1000 * statistics.median(timings),
            "round_trips": {name: statistics.median(t[name] for t in trips) for name in LINKS},
            "conversation": json.loads(typical)}


def cold_call(stack: DelayedStack, timeout: float) -> dict[str, Any]:
    """A fresh Python process's first call, from its first line after the imports."""
    proc = subprocess.Popen(
        [sys.executable, "-c", COLD_SCRIPT, stack.sdk_broker_url, stack.endpoint_id,
         stack.token, str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stack.sdk_pids.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout + 30)
    finally:
        stack.sdk_pids.discard(proc.pid)
    if proc.returncode != 0:
        raise RuntimeError(f"the fresh process failed: {err.strip()[-2000:]}")
    times = json.loads(out.strip().splitlines()[-1])
    if not times["ok"]:
        raise RuntimeError("the fresh process's call returned a wrong value")
    turns = turns_between(stack.links, times["t0"], times["t1"])
    return {"ms": 1000 * (times["t1"] - times["t0"]), "round_trips": round_trips(turns),
            "conversation": conversation(turns)}


def throughput(ex: Any, n: int, timeout: float) -> float:
    """Tasks per second of `n` tasks submitted at once, first submit to last result."""
    import concurrent.futures as cf

    t0 = time.monotonic()
    futures = [ex.submit(noop, i) for i in range(n)]
    done, not_done = cf.wait(futures, timeout=timeout)
    seconds = time.monotonic() - t0
    if not_done or any(f.result() != i for i, f in enumerate(futures)):
        raise RuntimeError(f"{len(not_done)} of {n} tasks unfinished or wrong")
    return n / seconds


def measure(delays_ms: list[float], n_latency: int, n_throughput: int, repeats: int,
            workers: int = 2, timeout: float = 300.0, log: Any = None,
            only: str | None = None) -> dict[str, Any]:
    """Every figure for every D (on link `only` alone, if given), `repeats` times in
    interleaved order; raw samples kept."""
    from fnrelay import Executor

    say = log or (lambda _: None)
    samples: dict[float, list[dict[str, Any]]] = {d: [] for d in delays_ms}
    with delayed_stack(workers, say) as stack:
        with Executor(stack.endpoint_id, client=stack.client()) as ex:
            warm_calls(stack, ex, 5, timeout)  # connections, group and function in place
            for rep in range(repeats):
                for d in delays_ms:
                    stack.set_delay(d / 1000, only)
                    say(f"repeat {rep + 1}/{repeats}, D = {d:g} ms")
                    sample = {"proxy_late_ms": 1000 * stack.calibration.lateness(d / 1000),
                              "warm": warm_calls(stack, ex, n_latency, timeout),
                              "cold": cold_call(stack, timeout)}
                    if n_throughput:
                        sample["tasks_per_s"] = throughput(ex, n_throughput, timeout)
                    samples[d].append(sample)
            stack.set_delay(0)
    return summarize(samples)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(samples: dict[float, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per D, the excess over D = 0 against the physical minimum, and round trips."""
    rows = []
    base: dict[str, float] = {}
    for d, runs in sorted(samples.items()):
        warm = _median([r["warm"]["p50_ms"] for r in runs])
        cold = _median([r["cold"]["ms"] for r in runs])
        tput = _median([r["tasks_per_s"] for r in runs]) if "tasks_per_s" in runs[0] else None
        if d == min(samples):
            base = {"warm": warm, "cold": cold, "tput": tput or 0.0}
        row: dict[str, Any] = {
            "delay_ms": d, "runs": len(runs), "warm_p50_ms": warm, "cold_ms": cold,
            "tasks_per_s": tput,
            "warm_round_trips": runs[len(runs) // 2]["warm"]["round_trips"],
            "cold_round_trips": runs[len(runs) // 2]["cold"]["round_trips"],
            "warm_conversation": runs[len(runs) // 2]["warm"]["conversation"],
            "cold_conversation": runs[len(runs) // 2]["cold"]["conversation"]}
        if d > 0:
            late = _median([r["proxy_late_ms"] for r in runs])
            row["proxy_late_ms"] = late
            for kind, crossings in (("warm", WARM_CROSSINGS), ("cold", COLD_CROSSINGS)):
                extra = row[f"{kind}_p50_ms" if kind == "warm" else "cold_ms"] - base[kind]
                row[f"{kind}_extra_ms"] = extra
                row[f"{kind}_crossings_seen"] = extra / d
                row[f"{kind}_bound_ms"] = SLACK * crossings * d
                row[f"{kind}_within_bound"] = extra <= SLACK * crossings * d
                # What the delay line itself adds to the crossings a call cannot avoid is the
                # harness's lateness, not the call's (benchmarks.delay_proxy.Calibration).
                net = extra - crossings * late
                row[f"{kind}_net_extra_ms"] = net
                row[f"{kind}_net_within_bound"] = net <= SLACK * crossings * d
            if tput and base["tput"]:
                row["throughput_vs_d0"] = tput / base["tput"]
        rows.append(row)
    return {"crossings": {"warm": WARM_CROSSINGS, "cold": COLD_CROSSINGS}, "slack": SLACK,
            "rows": rows, "samples": {str(d): runs for d, runs in samples.items()}}


def render(result: dict[str, Any]) -> str:
    """The table: one line per D, then each D's round trips per link."""
    head = (f"{'D ms':>5} {'warm p50':>9} {'+ms':>7} {'/D':>5} {'bound':>6} "
            f"{'cold':>8} {'+ms':>7} {'/D':>5} {'bound':>6} {'tasks/s':>8} {'vs D=0':>6}")
    lines = [f"medians of {result['rows'][0]['runs']} runs; bound = {result['slack']} x "
             f"crossings x D (warm {result['crossings']['warm']}, cold "
             f"{result['crossings']['cold']})", head]
    for r in result["rows"]:
        def f(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            value = r.get(key)
            return "-" if value is None else format(value, fmt)
        lines.append(
            f"{r['delay_ms']:>5g} {f('warm_p50_ms', '9.1f')} {f('warm_extra_ms', '7.1f')} "
            f"{f('warm_crossings_seen', '5.1f')} {f('warm_bound_ms', '6.1f')} "
            f"{f('cold_ms', '8.1f')} {f('cold_extra_ms', '7.1f')} "
            f"{f('cold_crossings_seen', '5.1f')} {f('cold_bound_ms', '6.1f')} "
            f"{f('tasks_per_s', '8.0f')} {f('throughput_vs_d0', '6.2f')}")
    lines.append("net of the delay line's own lateness per crossing (measured in the same "
                 "runs by a ping-pong through an idle link):")
    for r in result["rows"]:
        if "proxy_late_ms" in r:
            warm, cold, d = r["warm_net_extra_ms"], r["cold_net_extra_ms"], r["delay_ms"]
            lines.append(f"  D = {d:g} ms: {r['proxy_late_ms']:.2f} ms late per crossing; "
                         f"warm +{warm:.1f} ms = {warm / d:.1f} x D, "
                         f"cold +{cold:.1f} ms = {cold / d:.1f} x D")
    lines.append("round trips per link (warm call | fresh process's first call):")
    for r in result["rows"]:
        trips = ", ".join(f"{name} {r['warm_round_trips'][name]:g} | "
                          f"{r['cold_round_trips'].get(name, 0)}" for name in LINKS)
        lines.append(f"  D = {r['delay_ms']:g} ms: {trips}")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks latency", description=(
        __doc__ or "").strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delays", default="0,5,25",
                   help="one-way delays per link in ms, comma-separated (0,5,25)")
    p.add_argument("--n-latency", type=int, default=30, help="warm lone calls per run (30)")
    p.add_argument("--n-throughput", type=int, default=10_000,
                   help="tasks in each throughput run (10000; 0 skips it)")
    p.add_argument("--link", choices=LINKS,
                   help="delay this link alone (the others undelayed), to see what it costs")
    p.add_argument("--repeats", type=int, default=3, help="runs per delay; medians (3)")
    p.add_argument("--workers", type=int, default=2, help="the endpoint's workers (2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per wait (300)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="where latency-<time>.json and latency-latest.json go")
    a = p.parse_args(argv)
    try:
        a.delays = [float(x) for x in a.delays.split(",") if x.strip()]
    except ValueError:
        p.error(f"--delays must be numbers in ms like 0,5,25, not {a.delays!r}")
    if not a.delays or min(a.delays) != 0 or any(d < 0 for d in a.delays):
        p.error("--delays must include 0 (the baseline) and no negative delay")
    if a.n_latency < 1 or a.repeats < 1 or a.n_throughput < 0:
        p.error("--n-latency and --repeats must be at least 1, --n-throughput at least 0")
    return a


def main(argv: list[str]) -> int:
    from benchmarks.harness import _machine, log

    a = parse(argv)
    result = measure(a.delays, a.n_latency, a.n_throughput, a.repeats, a.workers, a.timeout,
                     log, a.link)
    result.update(timestamp=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                  machine=_machine(), load_avg=os.getloadavg(),
                  options={"delays_ms": a.delays, "n_latency": a.n_latency,
                           "n_throughput": a.n_throughput, "repeats": a.repeats,
                           "workers": a.workers, "link": a.link or "all"})
    print(render(result))
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (a.out / f"latency-{stamp}.json", a.out / "latency-latest.json"):
        path.write_text(json.dumps(result, indent=1, default=str))
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
