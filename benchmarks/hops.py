"""Where one lone task's latency goes: medians per hop over the latency run's calls.

Each call is split by the worker's own start/end times (`details.started`/`completed`) and
the task's history (broker clock; same machine, same clock) into the hops below. On the
direct path (the default for an Executor on its owner's endpoint) the broker records the task
and its result alongside, off the call's way: the last two lines say how long after the
submit and after the worker's end those records were committed. The harness adds this
breakdown to every fnrelay run; `python -m benchmarks.hops [N]` measures it alone on a fresh
local stack.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

#: (name, from, to): the points are the SDK's own times ("submit", "resolved"), history states
#: and the worker's "started"/"completed".
HOPS = (
    ("submit -> worker starts", "submit", "started"),
    ("the task itself", "started", "completed"),
    ("worker ends -> future resolves", "completed", "resolved"),
    ("whole call", "submit", "resolved"),
    ("(off the way) submit -> task recorded", "submit", "received"),
    ("(off the way) worker ends -> result recorded", "completed", "success"),
)
CHUNK = 500  # task ids per batch status request


def breakdown(client: Any, calls: list[tuple[str, float, float]]) -> dict[str, float]:
    """Median milliseconds per hop; `calls` are (task_id, submitted, resolved) wall times."""
    records: dict[str, Any] = {}
    ids = [task_id for task_id, _, _ in calls]
    for i in range(0, len(ids), CHUNK):
        records.update(client.get_tasks(ids[i : i + CHUNK])["tasks"])
    samples = []
    for task_id, submitted, resolved in calls:
        task = records.get(task_id)
        if task is None:
            continue
        points = {"submit": submitted, "resolved": resolved,
                  **{h["status"]: h["time"] for h in task["history"]},
                  **{k: task["details"].get(k) for k in ("started", "completed")}}
        if all(isinstance(points.get(p), (int, float)) for _, a, b in HOPS for p in (a, b)):
            samples.append(points)
    if not samples:
        return {}
    return {name: 1000 * statistics.median(s[b] - s[a] for s in samples)
            for name, a, b in HOPS}


def measure(n: int = 100, warmup: int = 20) -> dict[str, float]:
    """Start a local stack and break `n` warm sequential calls down by hop."""
    from benchmarks.fnrelay_bench import lone_calls
    from benchmarks.stack import local_stack
    from fnrelay import Executor

    with local_stack(workers=2) as stack:
        client = stack.client()
        with Executor(stack.endpoint_id, client=client) as ex:
            _, _, calls = lone_calls(ex, n, warmup, timeout=60)
        return breakdown(client, calls)


def probe_main(measure_n: Any, argv: list[str], default_n: int, prog: str) -> int:
    """`python -m benchmarks.<probe> [N]`: run `measure_n(N)` and print its milliseconds.
    The probe's module docstring is its --help."""
    module = sys.modules.get(getattr(measure_n, "__module__", ""), None)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(module.__doc__ or "").strip() if module else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=default_n,
                        help=f"lone calls to measure (default {default_n})")
    n = parser.parse_args(argv).n
    if n < 1:
        parser.error("N must be at least 1")
    for name, ms in measure_n(n).items():
        print(f"{name:32s} {ms:8.3f} ms")
    return 0


def main(argv: list[str]) -> int:
    return probe_main(measure, argv, 100, "python -m benchmarks.hops")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
