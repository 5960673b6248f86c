"""The pending-task table's settling rules (fnrelay.executor.pending), in memory."""

from __future__ import annotations

import logging
import uuid

import pytest

from fnrelay import wire
from fnrelay.client import task_entry
from fnrelay.droplog import DropLog
from fnrelay.errors import TaskExecutionFailed
from fnrelay.executor.future import FnRelayFuture
from fnrelay.executor.pending import PendingTable
from support.fake_transport import Owner, failure, remote_traceback, success

log = logging.getLogger("test.pending")



@pytest.fixture
def table() -> PendingTable:
    return PendingTable(DropLog(log))


def _entry() -> dict:
    return task_entry(uuid.uuid4(), (1,), {})


def queued(table: PendingTable) -> FnRelayFuture:
    future = FnRelayFuture(Owner(table))
    with table.lock:
        table.put(future, _entry())
    return future


def outstanding(table: PendingTable, direct: bool = False) -> tuple[FnRelayFuture, str]:
    """A future the broker accepted (or, `direct`, one published to the endpoint)."""
    future = queued(table)
    chunk = table.claim([table.queue.get_nowait()])
    task_id = wire.new_task_id()
    table.sending()
    if direct:
        msg = wire.TaskMessage(task_id=task_id, function_id="f", function="", payload="",
                               task_group_id="g", direct=True)
        table.publishing(chunk, [msg])
        table.sent()
    else:
        table.accepted(chunk, [task_id])
    return future, task_id


def test_a_success_settles_its_future_with_the_value(table):
    future, task_id = outstanding(table)
    table.settle_all([success(task_id, {"answer": 42})])
    assert future.result(timeout=0) == {"answer": 42}
    assert task_id not in table.outstanding


def test_a_remote_exception_is_raised_with_its_remote_traceback(table):
    future, task_id = outstanding(table)
    table.settle_all([failure(task_id, ZeroDivisionError("division by zero"))])
    with pytest.raises(ZeroDivisionError, match="division by zero") as info:
        future.result(timeout=0)
    assert isinstance(info.value, TaskExecutionFailed)  # what Globus Compute code catches
    assert info.value.remote_data == remote_traceback(ZeroDivisionError("division by zero"))


def test_a_cancelled_result_cancels_the_future(table):
    future, task_id = outstanding(table)
    table.settle_all([wire.ResultMessage(task_id=task_id, status="cancelled")])
    assert future.cancelled()


def test_the_first_result_wins_and_a_duplicate_is_ignored(table):
    future, task_id = outstanding(table)
    table.settle_all([success(task_id, "first")])
    assert not table.outstanding  # settled: nothing is matched to it again
    table.settle_all([success(task_id, "second"), failure(task_id, ValueError("late"))])
    assert future.result(timeout=0) == "first"


def test_an_endpoints_result_for_a_task_not_sent_to_it_directly_is_refused_and_logged(
        table, caplog):
    future, task_id = outstanding(table)
    with caplog.at_level(logging.WARNING, logger=log.name):
        table.settle_all([success(task_id, "forged")], via_endpoint=True)
    assert not future.done()
    assert any(f"the endpoint's result for task {task_id}" in r.getMessage()
               for r in caplog.records)
    table.settle_all([success(task_id, "genuine")])  # the broker's still settles it
    assert future.result(timeout=0) == "genuine"


def test_an_endpoints_result_settles_a_task_published_to_it_directly(table):
    future, task_id = outstanding(table, direct=True)
    table.settle_all([success(task_id, "direct")], via_endpoint=True)
    assert future.result(timeout=0) == "direct"


def test_a_result_for_an_unknown_task_settles_nothing_and_is_not_kept(table):
    future, task_id = outstanding(table)
    table.settle_all([success(wire.new_task_id(), "stray")])
    assert not future.done() and list(table.outstanding) == [task_id]
    assert not table.early  # no send under way: nothing to wait for


def test_a_result_that_beats_its_submit_answer_settles_the_future_once_accepted(table):
    future = queued(table)
    chunk = table.claim([table.queue.get_nowait()])
    table.sending()
    task_id = wire.new_task_id()
    table.settle_all([success(task_id, "early")])  # the submit request is still under way
    assert not future.done()
    table.accepted(chunk, [task_id])
    assert future.result(timeout=0) == "early"
    assert not table.early and table.inflight == 0


def test_results_kept_for_a_send_are_dropped_once_no_send_is_under_way(table):
    table.sending()
    table.settle_all([success(wire.new_task_id(), "not ours")])
    assert table.early
    table.sent()
    assert not table.early


def test_a_future_cancelled_while_queued_is_not_sent_and_never_settled(table):
    future = queued(table)
    assert future.cancel()
    assert table.claim([table.queue.get_nowait()]) == []  # the submitter skips it
    assert future._submitted.is_set()
    table.settle_all([success("any", 1)])
    assert future.cancelled()


def test_a_claimed_future_is_left_to_the_broker_to_cancel(table):
    future, _ = outstanding(table)
    assert table.cancel_queued(future) is None
    assert not future.done()


def test_the_table_is_finished_only_when_closed_with_nothing_left(table):
    future, task_id = outstanding(table)
    assert not table.finished()
    table.closed = True
    assert not table.finished()  # a result is still owed
    table.settle_all([success(task_id, 1)])
    assert future.done() and table.finished()
