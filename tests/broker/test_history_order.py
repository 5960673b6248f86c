"""A task's history is in time order whatever order the broker learns the steps in.

The endpoint can start (and even finish) a task before the broker's publisher has recorded
the confirmed publish, and its clock may differ from the broker's: the steps' times must
still read forward (the e2e suite once saw waiting-for-endpoint stamped after running).
These call the broker's task store directly on a real SQLite database.
"""

from __future__ import annotations

import uuid

import pytest

from fnrelay.protocol import ResultMessage, StatusUpdate, now
from fnrelay_broker import registry, tasks
from fnrelay_broker.auth import CurrentUser, create_user
from fnrelay_broker.db import Database


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'broker.db'}")
    db.migrate()
    uid, _ = create_user(db, "alice")
    user = CurrentUser(id=uid, username="alice")
    ep = str(uuid.uuid4())
    registry.register_endpoint(db, user, ep, "ep", {})
    fid = registry.register_function(db, user, "body", "f", None)
    return db, user, ep, fid


def _submit(store) -> str:  # type: ignore[no-untyped-def]
    db, user, ep, fid = store
    answer = tasks.submit(db, user, str(uuid.uuid4()), ep, None,
                          [{"function_id": fid, "payload": "p"}])
    return answer["task_ids"][0]


def _history(store, task_id: str) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    db, user, _, _ = store
    rec = tasks.task_record(db, user, task_id)
    return [(h["status"], h["time"]) for h in rec["history"]]


def _assert_forward(history: list[tuple[str, float]]) -> None:
    states = [s for s, _ in history]
    assert states == ["received", "waiting-for-endpoint", "running", "success"], states
    times = [t for _, t in history]
    assert times == sorted(times), history


def test_worker_start_before_publish_bookkeeping(store):
    db, _, ep, _ = store
    task_id = _submit(store)
    published = now()
    started = now()  # the worker starts while the publisher still waits for the confirm
    tasks.apply_status(db, ep, [StatusUpdate(task_id=task_id, status="running")])
    tasks.finish_outbox(db, [], [task_id], published)
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": started})])
    _assert_forward(_history(store, task_id))


def test_result_folded_with_start_before_publish_is_recorded(store):
    db, _, ep, _ = store
    task_id = _submit(store)
    published = now()
    started = now()
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": started})])
    tasks.finish_outbox(db, [], [task_id], published)  # the confirm comes back last
    history = _history(store, task_id)
    _assert_forward(history)
    assert dict(history)["running"] == pytest.approx(started)


def test_confirm_after_worker_start_keeps_publish_time(store):
    db, _, ep, _ = store
    task_id = _submit(store)
    published = now()
    started = published + 0.001
    tasks.finish_outbox(db, [], [task_id], published)  # recorded after the worker started
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": started})])
    history = _history(store, task_id)
    _assert_forward(history)
    assert dict(history)["waiting-for-endpoint"] == published


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_endpoint_clock_skew_keeps_order(store, skew):
    db, _, ep, _ = store
    task_id = _submit(store)
    tasks.record_results(db, ep, [ResultMessage(task_id=task_id, status="success", result="r",
                                                details={"started": now() + skew})])
    _assert_forward(_history(store, task_id))
