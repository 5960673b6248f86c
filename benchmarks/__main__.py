"""`python -m benchmarks`: run the harness, print the table, write JSON and the chart."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness import PHASES, Options, log, run, save
from benchmarks.report import render

QUICK = {"n_latency": 200, "n_throughput": 1000, "stored_tasks": 10_000}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=(
        "Benchmark fnrelay against Parsl HTEX and raw AMQP on this machine "
        "(see docs/performance.md). `python -m benchmarks latency --help`: round trips "
        "across links with a one-way delay; `python -m benchmarks tenants --help`: many "
        "users on one broker, and fairness under a flood."))
    p.add_argument("--n-latency", type=_positive, help="timed one-at-a-time calls (500)")
    p.add_argument("--n-throughput", type=_positive, help="tasks in the throughput run (10000)")
    p.add_argument("--workers", type=_positive, default=2, help="workers of fnrelay and Parsl")
    p.add_argument("--warmup", type=int, default=50, help="untimed calls before latency")
    p.add_argument("--stored-tasks", type=_positive,
                   help="tasks stored for the broker memory probe (100000)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="where the JSON and PNG go")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy the broker, endpoint and SDK during fnrelay's runs into DIR")
    p.add_argument("--only", action="append", choices=PHASES,
                   help="run only this phase (repeatable)")
    p.add_argument("--quick", action="store_true",
                   help="small counts for development: 200 latency calls, 1000 tasks, "
                        "10000 stored tasks (explicit counts still win)")
    a = p.parse_args(argv)
    base = QUICK if a.quick else {}
    pick = lambda name, default: getattr(a, name) or base.get(name, default)  # noqa: E731
    return Options(
        n_latency=pick("n_latency", 500), n_throughput=pick("n_throughput", 10_000),
        workers=a.workers, warmup=a.warmup, stored_tasks=pick("stored_tasks", 100_000),
        timeout=a.timeout, out=a.out, chart=not a.no_chart, profile=a.profile,
        phases=tuple(a.only or PHASES), quick=a.quick)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["latency"]:  # round trips across delayed links: benchmarks/latency.py
        from benchmarks import latency

        return latency.main(args[1:])
    if args[:1] == ["tenants"]:  # many users on one broker: benchmarks/tenants.py
        from benchmarks import tenants

        return tenants.main(args[1:])
    opts = parse(argv)
    try:
        result = run(opts)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(render(result))
    for path in save(result, opts):
        log(f"wrote {path}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
