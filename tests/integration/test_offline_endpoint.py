"""A task sent to a stopped endpoint waits for it: the user waiting is told so, not left in
silence (issue 24)."""

from __future__ import annotations

import concurrent.futures as cf
import logging

import pytest

from fnrelay import Executor
from fnrelay.executor import endpoints
from support.waiting import wait_for


def square(x):
    return x * x


@pytest.fixture
def stopped_endpoint(client, make_endpoint) -> str:
    ep = make_endpoint("stopped")
    ep.stop()
    wait_for(lambda: client.get_endpoint_status(ep.endpoint_id)["status"] == "offline",
             "the stopped endpoint to be offline")
    return ep.endpoint_id


def test_waiting_on_a_stopped_endpoint_warns_once_and_the_timeout_says_why(
        client, stopped_endpoint, caplog, monkeypatch):
    monkeypatch.setattr(endpoints, "CHECK_EVERY", 0.3)  # several checks within the wait
    caplog.set_level(logging.INFO, logger="fnrelay")
    ex = Executor(endpoint_id=stopped_endpoint, client=client)
    future = ex.submit(square, 3)
    with pytest.raises(TimeoutError) as raised:
        future.result(timeout=2)
    assert isinstance(raised.value, cf.TimeoutError)
    assert str(raised.value).startswith(
        f"task {future.task_id} not done after 2 s; endpoint {stopped_endpoint} is offline "
        "since ")
    assert str(raised.value).endswith(" UTC (its last heartbeat)")
    said = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and stopped_endpoint in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"endpoint {stopped_endpoint} is offline since ")
    assert future.cancel()
    ex.shutdown()
