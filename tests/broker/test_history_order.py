"""A task's history is in time order whatever order the broker learns the steps in.

The endpoint can start (and even finish) a task before the broker's publisher has recorded
the confirmed publish, and its clock may differ from the broker's: the steps' times must
still read forward (the e2e suite once saw waiting-for-endpoint stamped after running).
These call the broker's task store directly on a real SQLite database.
"""

from __future__ import annotations

import pytest

from fnrelay.wire import ResultMessage, StatusUpdate, now
from fnrelay_broker import tasks


def _assert_forward(history: list[tuple[str, float]]) -> None:
    states = [s for s, _ in history]
    assert states == ["received", "waiting-for-endpoint", "running", "success"], states
    times = [t for _, t in history]
    assert times == sorted(times), history


def test_worker_start_before_publish_bookkeeping(task_store):
    db, ep = task_store.db, task_store.endpoint_id
    task_id = task_store.submit()
    published = now()
    started = now()  # the worker starts while the publisher still waits for the confirm
    tasks.apply_status(db, ep, [StatusUpdate(task_id=task_id, status="running")])
    tasks.finish_outbox(db, [], [task_id], published)
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": started})])
    _assert_forward(task_store.history(task_id))


def test_result_folded_with_start_before_publish_is_recorded(task_store):
    db, ep = task_store.db, task_store.endpoint_id
    task_id = task_store.submit()
    published = now()
    started = now()
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": started})])
    tasks.finish_outbox(db, [], [task_id], published)  # the confirm comes back last
    history = task_store.history(task_id)
    _assert_forward(history)
    assert dict(history)["running"] == pytest.approx(started)


def test_confirm_after_worker_start_keeps_publish_time(task_store):
    db, ep = task_store.db, task_store.endpoint_id
    task_id = task_store.submit()
    published = now()
    started = published + 0.001
    tasks.finish_outbox(db, [], [task_id], published)  # recorded after the worker started
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": started})])
    history = task_store.history(task_id)
    _assert_forward(history)
    assert dict(history)["waiting-for-endpoint"] == published


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_endpoint_clock_skew_keeps_order(task_store, skew):
    db, ep = task_store.db, task_store.endpoint_id
    task_id = task_store.submit()
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": now() + skew})])
    _assert_forward(task_store.history(task_id))
