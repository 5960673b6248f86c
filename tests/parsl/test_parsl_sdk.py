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
