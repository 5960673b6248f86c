"""Chaos: submit N tasks, then SIGKILL the endpoint twice, restart the broker and restart
RabbitMQ; every task must end exactly once (0 lost, 0 recorded twice).

N is FNRELAY_CHAOS_N (default 400 for `make test`; the figure in docs/reliability.md is from
N=2000). The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import os
import time

import pytest

from fnrelay import Executor
from support.chaos_checks import TERMINAL, statuses, terminal_rows
from support.private_stack import private_stack
from support.session import MARKER
from support.waiting import wait_for

N = int(os.environ.get("FNRELAY_CHAOS_N", "400"))


def work(i):
    import time

    time.sleep(0.05)
    return i


@pytest.fixture(scope="module")
def stack():
    yield from private_stack(MARKER)


def test_every_task_ends_exactly_once_through_kills_and_restarts(stack):
    ep = stack.endpoint("chaos", max_workers=4, max_retries=5)
    client = stack.client()
    started = time.monotonic()
    ex = Executor(ep.endpoint_id, client=client, batch_size=500)
    futures = [ex.submit(work, i) for i in range(N)]
    wait_for(lambda: all(f.task_id for f in futures), "the broker to accept every task")
    ids = [f.task_id for f in futures]

    def done_count():
        s = statuses(client, ids)
        return sum(1 for v in (s or {}).values() if v in TERMINAL)

    faults = []
    for _ in range(2):
        wait_for(lambda n=len(faults): done_count() > N * (n + 1) // 6 or done_count() == N,
                 "some progress")
        ep.kill()
        faults.append("endpoint SIGKILL")
        ep.start()
    stack.broker.stop()
    stack.broker.start()
    faults.append("broker restart")
    stack.rabbitmq.stop()
    stack.rabbitmq.start()
    faults.append("RabbitMQ restart")

    final = wait_for(lambda: (s := statuses(client, ids)) and
                     all(v in TERMINAL for v in s.values()) and len(s) == N and s,
                     f"all {N} tasks to end", timeout=600)
    ex.shutdown(wait=False)
    rows = terminal_rows(stack.broker.db_url)
    ended = sum(1 for v in final.values() if v in TERMINAL)
    succeeded = sum(1 for v in final.values() if v == "success")
    lost = N - ended
    twice = sum(1 for tid in ids if rows.get(tid, 0) > 1)
    never = sum(1 for tid in ids if rows.get(tid, 0) == 0)
    print(f"\nchaos: N={N} faults={faults} ended={ended} succeeded={succeeded} lost={lost} "
          f"recorded twice={twice} seconds={time.monotonic() - started:.0f}")
    assert ended == N and lost == 0 and never == 0
    assert twice == 0
    assert succeeded == N  # every fault is an infrastructure failure: retried, not failed
    assert sorted(f.result(timeout=120) for f in futures) == list(range(N))
