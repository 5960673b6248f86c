"""Where one lone task's latency goes: medians per hop over sequential calls.

`python -m benchmarks.hops [N]` starts a local stack, runs N no-op tasks one at a time through
`Executor`, and splits each call by the task's history (broker clock) and the worker's own
start/end times (same machine, same clock): the breakdown docs/performance.md quotes.
"""

from __future__ import annotations

import statistics
import sys
import time

from benchmarks.stack import local_stack
from benchmarks.tasks import noop

HOPS = (
    ("submit -> received", "submit", "received"),
    ("received -> published", "received", "waiting-for-endpoint"),
    ("published -> worker starts", "waiting-for-endpoint", "started"),
    ("the task itself", "started", "completed"),
    ("worker ends -> recorded", "completed", "success"),
    ("recorded -> future resolves", "success", "resolved"),
    ("whole call", "submit", "resolved"),
)


def measure(n: int = 100, warmup: int = 20) -> dict[str, float]:
    """Median milliseconds per hop over `n` warm sequential calls."""
    from fnrelay import Executor

    samples: list[dict[str, float]] = []
    with local_stack(workers=2) as stack:
        client = stack.client()
        with Executor(stack.endpoint_id, client=client) as ex:
            for i in range(warmup + n):
                t0 = time.time()
                fut = ex.submit(noop, i)
                fut.result(timeout=60)
                t1 = time.time()
                if i >= warmup:
                    samples.append({"submit": t0, "resolved": t1, "task_id": fut.task_id})
        for s in samples:
            task = client.get_task(s.pop("task_id"))
            s.update({h["status"]: h["time"] for h in task["history"]})
            s.update({k: task["details"][k] for k in ("started", "completed")})
    return {name: 1000 * statistics.median(s[b] - s[a] for s in samples)
            for name, a, b in HOPS}


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100
    for name, ms in measure(n).items():
        print(f"{name:32s} {ms:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
