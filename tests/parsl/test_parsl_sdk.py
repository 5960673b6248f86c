"""SDK end to end: Executor -> broker -> endpoint with `engine: {type: parsl, provider: local}`.

Needs the endpoint to know the engine type (ENGINE_MODULES["parsl"] in engines/base.py).
"""

from __future__ import annotations

import pytest

from fnrelay import Executor

pytestmark = pytest.mark.slow


def cube(x):
    return x ** 3


def test_executor_through_a_parsl_endpoint(client, make_endpoint):
    ep = make_endpoint("parsl-e2e", engine={
        "type": "parsl", "provider": "local", "max_workers_per_node": 2, "init_blocks": 1,
        "heartbeat_period": 1, "heartbeat_threshold": 4, "strategy_period": 0.5})
    with Executor(ep.endpoint_id, client=client) as ex:
        futures = {ex.submit(cube, i): i for i in range(50)}
        assert all(f.result(timeout=120) == i ** 3 for f, i in futures.items())


def shout(x):
    import subprocess
    import sys

    print(f"python says {x}")
    print("to stderr", file=sys.stderr)
    subprocess.run(["echo", "a child process says hi"], check=True)
    return x


def test_what_a_parsl_task_printed_comes_back_with_its_result(client, make_endpoint):
    ep = make_endpoint("parsl-print", engine={
        "type": "parsl", "provider": "local", "max_workers_per_node": 1, "init_blocks": 1,
        "heartbeat_period": 1, "heartbeat_threshold": 4, "strategy_period": 0.5})
    with Executor(ep.endpoint_id, client=client) as ex:
        first, second = ex.submit(shout, 1), ex.submit(shout, 2)
        assert (first.result(timeout=120), second.result(timeout=120)) == (1, 2)
    for future, x in ((first, 1), (second, 2)):  # one worker: each task has its own output
        details = client.task_record(future.task_id)["details"]
        assert details["stdout_tail"].splitlines() == [f"python says {x}",
                                                       "a child process says hi"]
        assert details["stderr_tail"] == "to stderr"
