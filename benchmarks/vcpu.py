"""Does busy work on one CPU slow a loop on another, whatever its priority?

`python -m benchmarks.vcpu [ROUNDS]` times a fixed pure-Python loop pinned to the first CPU,
alternately alone and while a spinner pinned to the second CPU runs at the lowest priority
Linux has (SCHED_IDLE), ROUNDS times each, and prints the median and the best time of each.
On a machine whose CPUs are independent the two medians agree. On a VM whose virtual CPUs
share physical cores (or SMT siblings) with each other the loop is slower beside the spinner:
then no priority inside the machine keeps background work (the broker's ledger, the
endpoint's journal) off a lone call's time, and only less work, or the broker on another
machine, shortens the latency tail (docs/performance.md, round 8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LOOP = 1_000_000
#: The spinner: pinned to a CPU, lowest scheduling class, busy until killed.
SPIN = ("import os, sys; cpu = int(sys.argv[1]); os.sched_setaffinity(0, {cpu}); "
        "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass")


def _loop() -> float:
    started = time.perf_counter()
    x = 0
    for i in range(LOOP):
        x += i * i
    return time.perf_counter() - started


def measure(rounds: int, cpus: tuple[int, int]) -> dict[str, list[float]]:
    """Seconds per loop on cpus[0], alone and beside a SCHED_IDLE spinner on cpus[1]."""
    os.sched_setaffinity(0, {cpus[0]})
    times: dict[str, list[float]] = {"alone": [], "beside an idle-class spinner": []}
    for _ in range(rounds):
        times["alone"] += [_loop() for _ in range(3)]
        spinner = subprocess.Popen([sys.executable, "-c", SPIN, str(cpus[1])])
        try:
            time.sleep(0.2)  # running and pinned
            times["beside an idle-class spinner"] += [_loop() for _ in range(3)]
        finally:
            spinner.kill()
            spinner.wait()
    return times


def interference(rounds: int = 4) -> float | None:
    """How much slower a loop on one CPU runs beside a spinner on another (median ratio), in
    a child process (the probe pins the process it runs in); None with fewer than two CPUs."""
    if len(os.sched_getaffinity(0)) < 2:
        return None
    done = subprocess.run([sys.executable, "-m", "benchmarks.vcpu", "--json", str(rounds)],
                          capture_output=True, text=True, timeout=120, check=True)
    return float(json.loads(done.stdout)["ratio"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vcpu",
                                     description=(__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rounds", nargs="?", type=int, default=8,
                        help="rounds of three loops each way (default 8)")
    parser.add_argument("--json", action="store_true",
                        help="print the medians (ms) and their ratio as one JSON object")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("ROUNDS must be at least 1")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        parser.error("needs two CPUs to run on (this process may use one)")
    times = measure(args.rounds, (cpus[0], cpus[1]))
    alone = statistics.median(times["alone"])
    if args.json:
        beside = statistics.median(times["beside an idle-class spinner"])
        print(json.dumps({"alone_ms": 1000 * alone, "beside_ms": 1000 * beside,
                          "ratio": beside / alone}))
        return 0
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:30s} median {1000 * median:7.1f} ms  best {1000 * min(values):7.1f} ms"
              f"  ({median / alone:.2f} x alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
