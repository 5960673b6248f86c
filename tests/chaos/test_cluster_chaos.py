"""Chaos on a three-node RabbitMQ cluster with quorum queues: while an Executor submits N tasks,
each node in turn is stopped (`rabbitmqctl stop_app`) and started, then killed (SIGKILL of its
Erlang VM) and booted again, and the endpoint and the broker are restarted. While a node is
down, every task submitted so far must still end (every party fails over to another node
rather than waiting for it). Every task must end exactly once (0 lost, 0 recorded twice) and
every future must resolve.

N is FNRELAY_CLUSTER_CHAOS_N (default 1000; the figures in docs/reliability.md are from
N=5000). The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from fnrelay import Executor
from fnrelay.devstack.rabbitmq_cluster import RabbitMQCluster
from support.chaos_checks import TERMINAL, statuses, terminal_rows
from support.private_stack import PrivateStack, private_stack
from support.session import MARKER
from support.waiting import wait_for

N = int(os.environ.get("FNRELAY_CLUSTER_CHAOS_N", "1000"))

#: (name, break, mend, whether every task must still end while it lasts)
Fault = tuple[str, Callable[[], None], Callable[[], None], bool]


def work(i):
    import time

    time.sleep(0.02)
    return i


@pytest.fixture(scope="module")
def stack(rabbitmq_cluster: RabbitMQCluster) -> Iterator[PrivateStack]:
    yield from private_stack(MARKER, cluster=rabbitmq_cluster)


def faults(cluster: RabbitMQCluster, stack: PrivateStack, ep) -> list[Fault]:
    """Each fault, in the order they strike."""
    out: list[Fault] = []
    for i, node in enumerate(cluster.nodes):
        name = node.nodename
        out.append((f"{name} stop_app", lambda i=i: cluster.stop_app(i),
                    lambda i=i: cluster.start_app(i), True))
        out.append((f"{name} kill -9", lambda i=i: cluster.kill(i),
                    lambda i=i: cluster.restart(i), True))
        if i == 0:
            out.append(("endpoint SIGKILL", ep.kill, ep.start, False))
        if i == 1:
            out.append(("broker restart", stack.broker.stop, stack.broker.start, False))
    return out


def test_every_task_ends_exactly_once_while_cluster_nodes_fail(stack, rabbitmq_cluster):
    ep = stack.endpoint("cluster-chaos", max_workers=4, max_retries=5)
    client = stack.client()
    started = time.monotonic()
    ex = Executor(ep.endpoint_id, client=client, batch_size=100)
    plan = faults(rabbitmq_cluster, stack, ep)
    chunk = -(-N // (2 * len(plan)))
    futures = []

    def submit_chunk():
        for _ in range(min(chunk, N - len(futures))):
            futures.append(ex.submit(work, len(futures)))

    done: list[str] = []
    for name, breaks, mends, live in plan:
        submit_chunk()
        breaks()
        try:  # mended even when the test fails: the cluster serves the rest of the session
            submit_chunk()  # published while the fault lasts
            if live:
                wait_for(lambda: all(f.done() for f in futures),
                         f"the tasks submitted so far to end while {name} lasts", timeout=120)
            else:
                time.sleep(1)
        finally:
            mends()
        done.append(name)
    submit_chunk()
    assert len(futures) == N
    wait_for(lambda: all(f.task_id for f in futures), "the broker to accept every task",
             timeout=300)
    ids = [f.task_id for f in futures]
    final = wait_for(lambda: (s := statuses(client, ids)) and
                     all(v in TERMINAL for v in s.values()) and len(s) == N and s,
                     f"all {N} tasks to end", timeout=600)
    results = sorted(f.result(timeout=300) for f in futures)
    ex.shutdown(wait=False)
    rows = terminal_rows(stack.broker.db_url)
    ended = sum(1 for v in final.values() if v in TERMINAL)
    succeeded = sum(1 for v in final.values() if v == "success")
    twice = sum(1 for tid in ids if rows.get(tid, 0) > 1)
    never = sum(1 for tid in ids if rows.get(tid, 0) == 0)
    print(f"\ncluster chaos: N={N} faults={done} ended={ended} succeeded={succeeded} "
          f"lost={N - ended} recorded twice={twice} seconds={time.monotonic() - started:.0f}")
    assert ended == N and never == 0
    assert twice == 0
    assert succeeded == N  # every fault is an infrastructure failure: retried, not failed
    assert results == list(range(N))
