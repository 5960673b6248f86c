"""What the broker's decoding of direct-path records costs, per record, in this process.

`python -m benchmarks.records_decode` builds one `tasks` message of `--tasks` records as an
Executor sends the broker (a no-op function taking one int, as `benchmarks tenants` floods)
and times `fnrelay_broker.inbound.direct_tasks` on it: JSON, the broker's database check
(`validation.check_body`) and the wire types. It prints the median over `--rounds` decodes,
in microseconds per record. A flood's records keep the broker's result consumer busy;
decoding them was a third of that (docs/performance.md, round 15).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from fnrelay import serialize, wire
from fnrelay.client import task_entry
from fnrelay.direct import task_messages


def sleepy(ms: float) -> float:
    import time

    time.sleep(ms / 1000)
    return ms


def records_message(n: int) -> bytes:
    """One direct-path `tasks` message of `n` records of `sleepy(5)`."""
    code = serialize.serialize_function(sleepy)
    function_id, group_id = wire.new_id(), wire.new_id()
    entries = [task_entry(function_id, (5,), {}) for _ in range(n)]
    ids = [wire.new_task_id() for _ in entries]
    return wire.encode_tasks(task_messages(entries, ids, [code] * n, group_id))


def decode_us_per_record(body: bytes, n: int, rounds: int) -> float:
    from fnrelay_broker import inbound

    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        inbound.direct_tasks(body)
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.records_decode",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000, help="records in the message (1000)")
    p.add_argument("--rounds", type=int, default=20, help="decodes timed (20)")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.rounds < 1:
        p.error("--tasks and --rounds must be at least 1")
    body = records_message(args.tasks)
    us = decode_us_per_record(body, args.tasks, args.rounds)
    print(f"{args.tasks} records, {len(body) / args.tasks:.0f} B each: "
          f"{us:.1f} us per record decoded (median of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
