"""A shared endpoint's workers go round-robin across users: one user's flood of queued tasks
does not hold up another user's lone call, and the flood itself still all runs.

Alice shares her endpoint (one worker) through `allowed_functions`; while it is stopped,
Mallory queues a flood on it and then Bob one call; once it starts, Bob's call must finish
while most of the flood is still unfinished. With a FIFO queue it would finish last.
Behaviour, not timing: the assertion counts unfinished tasks.
"""

from __future__ import annotations

import concurrent.futures as cf
import uuid

from fnrelay import Client, Executor
from fnrelay.devstack.services import LocalEndpoint
from support.waiting import wait_for

FLOOD = 2_000
MARKER = "fnrelay-test-fair-share"


def flood_task(i):
    import time

    time.sleep(0.002)
    return i


def lone_task(x):
    return 2 * x


def test_a_lone_call_on_a_shared_endpoint_does_not_wait_behind_a_flood(broker, tmp_path):
    def user(name: str) -> tuple[Client, str]:
        token = broker.add_user(f"{name}-{uuid.uuid4().hex[:6]}")
        return Client(broker.url, token), token

    (alice, alice_token), (mallory, _), (bob, _) = user("alice"), user("mallory"), user("bob")
    ep = LocalEndpoint(tmp_path / "ep", "shared", broker.url, alice_token,
                       marker=MARKER).configure(max_workers=1)
    ep.start(foreground=True)
    try:
        allowed = [alice.register_function(f) for f in (flood_task, lone_task)]
        alice.put(f"endpoints/{ep.endpoint_id}", data={
            "name": "shared", "metadata": {"allowed_functions": allowed}})
        with Executor(endpoint_id=ep.endpoint_id, client=mallory) as flood_ex, \
                Executor(endpoint_id=ep.endpoint_id, client=bob) as lone_ex:
            assert lone_ex.submit(lone_task, 1).result(timeout=60) == 2  # warm: registered
            ep.stop()  # the flood and the lone call queue up first, in that order
            flood = [flood_ex.submit(flood_task, i) for i in range(FLOOD)]
            wait_for(lambda: all(f.task_id for f in flood), "the flood's submits", 120)
            lone = lone_ex.submit(lone_task, 21)
            wait_for(lambda: lone.task_id, "the lone call's submit", 60)
            ep.start(foreground=True)
            assert lone.result(timeout=120) == 42
            unfinished = sum(not f.done() for f in flood)
            done, not_done = cf.wait(flood, timeout=300)
        assert unfinished >= FLOOD // 2, (
            f"the lone call waited behind the flood: only {unfinished} of {FLOOD} unfinished")
        assert not not_done and sorted(f.result() for f in flood) == list(range(FLOOD))
    finally:
        ep.stop()
