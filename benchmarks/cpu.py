"""CPU time per lone call, by process: where two shared cores go.

`python -m benchmarks.cpu [N]` starts a fresh local stack, makes N warm lone calls through an
Executor, and prints each process's CPU time (user + system from /proc, its descendants
included: the endpoint's workers, RabbitMQ's helpers) divided by N. On a machine with fewer
cores than busy processes a call waits for CPU, so the sum matters as much as any one hop
(docs/performance.md, round 4).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from the state on (after the name)


def _tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu_seconds(root: int, descendants: bool = True) -> float:
    """User + system CPU seconds of `root` (and its descendants) so far."""
    total = 0
    for pid in _tree(root) if descendants else [root]:
        if fields := _stat(pid):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def measure(n: int = 500, warmup: int = 50) -> dict[str, float]:
    """Milliseconds of CPU per lone call for each process of a fresh local stack."""
    from benchmarks.fnrelay_bench import lone_calls
    from benchmarks.stack import local_stack
    from fnrelay import Executor

    with local_stack(workers=2) as stack:
        roots = {"rabbitmq": _rabbitmq_pid(stack.dir), "broker": stack.broker_pid,
                 "endpoint (with workers)": stack.endpoint_pid, "sdk": os.getpid()}
        mine = {os.getpid()}  # the stack's processes are this one's children: not the SDK's
        with Executor(stack.endpoint_id, client=stack.client()) as ex:
            lone_calls(ex, warmup, 0, timeout=60)
            before = {name: cpu_seconds(pid, pid not in mine) for name, pid in roots.items()}
            t0 = time.monotonic()
            lone_calls(ex, n, 0, timeout=60)
            wall = time.monotonic() - t0
            used = {name: 1000 * (cpu_seconds(pid, pid not in mine) - before[name]) / n
                    for name, pid in roots.items()}
    return {**used, "all processes": sum(used.values()), "wall time per call": 1000 * wall / n}


def _rabbitmq_pid(stack_dir: Path) -> int:
    """The RabbitMQ node's process (its pid file), started by the local stack."""
    return int((stack_dir / "rabbitmq" / "pid").read_text().split()[0])


def main(argv: list[str]) -> int:
    from benchmarks.hops import probe_main

    return probe_main(measure, argv, 500, "python -m benchmarks.cpu")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
