"""The direct path's ledger (fnrelay_broker.direct) on a real SQLite database (tests/postgres
runs these on PostgreSQL too): a record that arrives with its task's result is written finished
in one go, the same as two writes would have left it; code that does not match its id fails
the task whatever the endpoint says; a record rebuilt from a result (the Executor's records
never came) checks the same things."""

from __future__ import annotations

import uuid

import pytest

from fnrelay import wire
from fnrelay_broker import direct, tasks
from fnrelay_broker.registry import code_digest, create_task_group

BODY = "04\nbody"  # the task_store fixture registers its function with this code


def _task(store, body: str = BODY) -> wire.TaskMessage:  # type: ignore[no-untyped-def]
    return wire.TaskMessage(task_id=str(uuid.uuid4()), function_id=store.function_id,
                                function=body, payload="03\n[[1],{}]", direct=True)


def _result(task_id: str, status: str = "success") -> wire.ResultMessage:
    return wire.ResultMessage(task_id=task_id, status=status, result="03\n2",
                                  details={"started": wire.now(), "worker": "w"})


def _group(store, granted: bool = True) -> str:  # type: ignore[no-untyped-def]
    """A new group of the store's user, granted the direct path to its endpoint (as POST
    /task_groups with that endpoint makes it) unless not `granted`."""
    return create_task_group(store.db, store.user, None,
                             store.endpoint_id if granted else None)


def _steps(store, task_id: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    rec = tasks.task_record(store.db, store.user, task_id)
    return [(h["status"], h["detail"]) for h in rec["history"]]


def test_a_record_with_its_result_is_written_as_two_writes_would_leave_it(task_store):  # type: ignore[no-untyped-def]
    group = _group(task_store)
    together, apart = _task(task_store), _task(task_store)
    finished = direct.record(task_store.db, task_store.endpoint_id, group, [together],
                             {together.task_id: _result(together.task_id)})
    assert finished == {together.task_id}
    assert direct.record(task_store.db, task_store.endpoint_id, group, [apart]) == set()
    tasks.record_results(task_store.db, task_store.endpoint_id, [_result(apart.task_id)])
    assert _steps(task_store, together.task_id) == _steps(task_store, apart.task_id) == [
        ("received", ""), ("waiting-for-endpoint", direct.DETAIL),
        ("running", "reported with the result"), ("success", "")]
    for task_id in (together.task_id, apart.task_id):
        rec = tasks.task_record(task_store.db, task_store.user, task_id)
        assert (rec["status"], rec["result"], rec["pending"]) == ("success", "03\n2", False)
        assert rec["completed"] is not None


def test_a_redelivered_record_does_not_take_a_second_result(task_store):  # type: ignore[no-untyped-def]
    group = _group(task_store)
    t = _task(task_store)
    direct.record(task_store.db, task_store.endpoint_id, group, [t])
    again = direct.record(task_store.db, task_store.endpoint_id, group, [t],
                          {t.task_id: _result(t.task_id)})
    assert again == set()  # known: its result goes the usual way (record_results)
    assert tasks.task_record(task_store.db, task_store.user, t.task_id)["status"] == \
        "waiting-for-endpoint"


def test_code_that_does_not_match_fails_the_task_and_its_result_is_not_taken(task_store):  # type: ignore[no-untyped-def]
    group = _group(task_store)
    forged = _task(task_store, body="04\nother code")
    finished = direct.record(task_store.db, task_store.endpoint_id, group, [forged],
                             {forged.task_id: _result(forged.task_id)})
    assert finished == set()
    rec = tasks.task_record(task_store.db, task_store.user, forged.task_id)
    assert rec["status"] == "failed" and "does not match" in rec["exception"]["message"]


def test_a_record_from_a_result_checks_the_code_and_the_group(task_store):  # type: ignore[no-untyped-def]
    group = _group(task_store)
    good, forged, stray, ungranted = (_result(str(uuid.uuid4())) for _ in range(4))
    for r, digest, group_id in ((good, code_digest(BODY), group),
                                (forged, code_digest("04\nother"), group),
                                (stray, code_digest(BODY), str(uuid.uuid4())),
                                (ungranted, code_digest(BODY), _group(task_store, False))):
        r.task_group_id = group_id
        r.record = {"function_id": task_store.function_id, "function_sha256": digest,
                    "resource_specification": {}, "user_endpoint_config": {},
                    "max_retries": None}
    recorded = direct.record_from_results(task_store.db, task_store.endpoint_id,
                                          [good, forged, stray, ungranted])
    # `stray`'s group does not exist; `ungranted`'s, the same owner's, did not grant the
    # endpoint the direct path.
    assert recorded == {good.task_id, forged.task_id}
    assert _steps(task_store, good.task_id)[1][1] == direct.FROM_RESULT
    assert tasks.task_record(task_store.db, task_store.user, forged.task_id)["status"] == \
        "failed"


@pytest.mark.parametrize("record", [None, "x", {"function_id": 1}, {
    "function_id": "f", "function_sha256": "short"}, {
    "function_id": "f", "function_sha256": "a" * 64, "max_retries": -1}])
def test_a_malformed_record_in_a_result_records_nothing(task_store, record):  # type: ignore[no-untyped-def]
    r = _result(str(uuid.uuid4()))
    r.task_group_id, r.record = _group(task_store), record
    assert direct.record_from_results(task_store.db, task_store.endpoint_id, [r]) == set()


@pytest.mark.parametrize("finished_first", [True, False])
def test_records_with_and_without_results_in_one_write_keep_every_field(
        task_store, finished_first: bool) -> None:  # type: ignore[no-untyped-def]
    """One write may hold a record whose result came and one whose result did not (it waited
    RECORD_HOLD): the finished one keeps its result, the other stays waiting, in any order."""
    group = _group(task_store)
    done, waiting = _task(task_store), _task(task_store)
    msgs = [done, waiting] if finished_first else [waiting, done]
    finished = direct.record(task_store.db, task_store.endpoint_id, group, msgs,
                             {done.task_id: _result(done.task_id)})
    assert finished == {done.task_id}
    rec = tasks.task_record(task_store.db, task_store.user, done.task_id)
    assert (rec["status"], rec["result"]) == ("success", "03\n2")
    assert rec["details"]["worker"] == "w"
    rec = tasks.task_record(task_store.db, task_store.user, waiting.task_id)
    assert (rec["status"], rec["result"]) == ("waiting-for-endpoint", None)


def _count(instrument, **labels: str) -> float:  # type: ignore[no-untyped-def]
    """The value of a sample of this process's instrument (its _total or _count)."""
    samples = instrument.family().samples
    return sum(s.value for s in samples if s.name.endswith(("_total", "_count"))
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_direct_records_count_as_submits_and_their_wait_as_ledger_lag(task_store):  # type: ignore[no-untyped-def]
    from fnrelay_broker import metrics

    group = _group(task_store)
    first, second = _task(task_store), _task(task_store)
    lag_before = _buckets(metrics.LEDGER_LAG)
    before = (_count(metrics.SUBMITTED, path="direct"), _count(metrics.LEDGER_LAG),
              _count(metrics.RESULTS, state="success"), _count(metrics.RUN_TIME))
    arrived = {first.task_id: wire.now() - 0.2, second.task_id: wire.now()}
    direct.record(task_store.db, task_store.endpoint_id, group, [first, second],
                  {first.task_id: _result(first.task_id)}, arrived)
    direct.record(task_store.db, task_store.endpoint_id, group, [first])  # redelivered
    after = (_count(metrics.SUBMITTED, path="direct"), _count(metrics.LEDGER_LAG),
             _count(metrics.RESULTS, state="success"), _count(metrics.RUN_TIME))
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 2, 1, 1]
    lag = {le: n - lag_before[le] for le, n in _buckets(metrics.LEDGER_LAG).items()}
    assert lag["+Inf"] == 2 and lag["0.1"] <= 1  # the record that came 0.2 s ago waited so


def _buckets(histogram) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {s.labels["le"]: s.value for s in histogram.family().samples
            if s.name.endswith("_bucket")}
