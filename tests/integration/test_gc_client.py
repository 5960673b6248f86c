"""Globus Compute code against fnrelay's Client, with only its import changed: the shapes
and errors GC's users rely on, each checked end to end (real broker, RabbitMQ, endpoint).

Fixtures (tests/conftest.py): ``client`` (alice), ``other_client`` (bob), ``endpoint_id`` (a
running local endpoint of alice's), ``broker_url``, ``alice_token``, ``make_endpoint``.
"""

from __future__ import annotations

import pickle
import uuid
import warnings

import globus_sdk
import pytest

from fnrelay import Client, Executor, errors
from fnrelay.errors import TaskExecutionFailed, TaskPending
from fnrelay.ignored import IgnoredOptionWarning
from support.waiting import wait_for

WAIT = 120.0  # upper bound for anything to happen; a bound, not a timing assertion


def square(x):
    """Squares x."""
    return x * x


def fail_with_value_error(n):
    raise ValueError(f"bad input {n}")


def finished(client: Client, task_id: str) -> None:
    wait_for(lambda: not client.task_record(task_id)["pending"], f"task {task_id}", WAIT)


# --- remote errors -------------------------------------------------------------------------------
def test_a_remote_error_is_caught_as_task_execution_failed_and_as_itself(client, endpoint_id):
    task_id = client.run(7, endpoint_id=endpoint_id,
                         function_id=client.register_function(fail_with_value_error))
    finished(client, task_id)
    for call in (client.get_result, client.get_task):
        with pytest.raises(TaskExecutionFailed) as info:
            call(task_id)
        exc = info.value
        assert isinstance(exc, ValueError) and exc.args == ("bad input 7",)
        assert "fail_with_value_error" in exc.remote_data and "bad input 7" in str(exc)
        assert exc.task_id == task_id and float(exc.completion_t) > 0
        again = pickle.loads(pickle.dumps(exc))
        assert isinstance(again, ValueError) and isinstance(again, TaskExecutionFailed)

    with Executor(endpoint_id, client=client) as ex:
        future = ex.submit(fail_with_value_error, 8)
        with pytest.raises(TaskExecutionFailed) as info:
            future.result(timeout=WAIT)
    assert isinstance(info.value, ValueError) and "bad input 8" in str(info.value)


def test_get_batch_result_holds_a_failed_tasks_exception(client, endpoint_id):
    batch = client.create_batch()
    batch.add(client.register_function(fail_with_value_error), args=(1,))
    batch.add(client.register_function(square), args=(3,))
    failed_id, ok_id = client.batch_run(endpoint_id, batch)["task_ids"]
    finished(client, failed_id)
    finished(client, ok_id)
    results = client.get_batch_result([failed_id, uuid.UUID(ok_id)])
    assert results[ok_id]["result"] == 9 and results[ok_id]["pending"] is False
    exc = results[failed_id]["exception"]
    assert isinstance(exc, TaskExecutionFailed) and isinstance(exc, ValueError)
    assert results[failed_id]["status"] == "failed" and results[failed_id]["completion_t"]


# --- shapes ---------------------------------------------------------------------------------------
def test_batch_run_answers_globus_computes_dict(client, endpoint_id):
    square_id = client.register_function(square)
    fail_id = client.register_function(fail_with_value_error)
    batch = client.create_batch()
    for i in range(3):
        batch.add(square_id, args=(i,))
    batch.add(fail_id, args=(0,))
    answer = client.batch_run(endpoint_id, batch)
    assert set(answer) >= {"tasks", "task_group_id", "request_id", "endpoint_id"}
    assert answer["endpoint_id"] == endpoint_id
    assert len(answer["tasks"][square_id]) == 3 and len(answer["tasks"][fail_id]) == 1
    assert answer["task_ids"] == answer["tasks"][square_id] + answer["tasks"][fail_id]
    members = client.get_task_group(answer["task_group_id"])["task_ids"]
    assert members == answer["task_ids"]
    with pytest.raises(ValueError, match="No tasks"):
        client.batch_run(endpoint_id, client.create_batch())


def test_get_task_has_the_value_and_completion_time(client, endpoint_id):
    function_id = client.register_function(square)
    task_id = client.run(12, endpoint_id=endpoint_id, function_id=function_id)
    finished(client, task_id)
    task = client.get_task(task_id)
    assert task["pending"] is False and task["status"] == "success"
    assert task["result"] == 144 and float(task["completion_t"]) > 0
    assert client.get_result(task_id) == 144


def test_task_pending_has_its_reason(client, make_endpoint):
    ep = make_endpoint("gc-pending", start=False)
    task_id = client.run(2, endpoint_id=ep.endpoint_id,
                         function_id=client.register_function(square))
    task = client.get_task(task_id)
    assert task["pending"] is True and "result" not in task
    with pytest.raises(TaskPending) as info:
        client.get_result(task_id)
    assert info.value.reason in ("received", "waiting-for-endpoint")  # never sent a result
    client.cancel(task_id)


def test_get_batch_result_skips_unknown_and_others_ids(client, other_client, endpoint_id):
    task_id = client.run(2, endpoint_id=endpoint_id, function_id=client.register_function(square))
    finished(client, task_id)
    unknown = str(uuid.uuid4())
    assert set(client.get_batch_result([task_id, unknown])) == {task_id}
    assert other_client.get_batch_result([task_id]) == {}


# --- keywords ------------------------------------------------------------------------------------
def test_globus_compute_client_keywords_are_accepted(broker_url, alice_token, endpoint_id):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = Client(broker_url, alice_token, do_version_check=True, environment="production",
                        code_serialization_strategy=object(),
                        data_serialization_strategy=object())
    ignored = [str(w.message) for w in caught if w.category is IgnoredOptionWarning]
    assert any("environment=" in m for m in ignored)
    assert any("code_serialization_strategy=" in m for m in ignored)
    assert client.whoami()["username"] == "alice"

    authorized = Client(broker_url, authorizer=globus_sdk.AccessTokenAuthorizer(alice_token))
    assert authorized.whoami()["username"] == "alice"
    with pytest.raises(ValueError, match="mutually exclusive"):
        Client(broker_url, alice_token, app=object(), authorizer=authorized.authorizer)


def test_register_function_keywords_and_docstring(client, endpoint_id):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function_id = client.register_function(square, public=True, group=str(uuid.uuid4()),
                                                metadata={"python_version": "3.11"})
    assert client.get_function(function_id)["description"] == "Squares x."
    assert {w.category for w in caught} <= {IgnoredOptionWarning}


def test_version_check_against_the_broker(client):
    client.version_check()  # this SDK and the broker speak the same protocol: no error


# --- methods -------------------------------------------------------------------------------------
def test_register_source_code_runs_on_the_endpoint(client, endpoint_id):
    source = "def triple(x):\n    return 3 * x\n"
    function_id = client.register_source_code(source, "triple", description="triples")
    task_id = client.run(5, endpoint_id=endpoint_id, function_id=function_id)
    finished(client, task_id)
    assert client.get_result(task_id) == 15
    with pytest.raises(ValueError, match="does not compile"):
        client.register_source_code("def broken(:\n", "broken")


def test_delete_function(client, endpoint_id):
    def only_here(x):
        return x + 1

    function_id = client.register_function(only_here)
    assert client.delete_function(function_id) == {"function_id": function_id, "deleted": True}
    with pytest.raises(errors.NotFoundError):
        client.get_function(function_id)
    with pytest.raises(errors.NotFoundError):
        client.delete_function(function_id)
    assert client.register_function(only_here) == function_id  # asks the broker again
    task_id = client.run(1, endpoint_id=endpoint_id, function_id=function_id)
    finished(client, task_id)
    assert client.get_result(task_id) == 2


def test_delete_function_with_unfinished_tasks_is_refused(client, make_endpoint):
    ep = make_endpoint("gc-delete-busy", start=False)
    function_id = client.register_function(square)
    task_id = client.run(2, endpoint_id=ep.endpoint_id, function_id=function_id)
    with pytest.raises(errors.BrokerError) as info:
        client.delete_function(function_id)
    assert info.value.http_status == 409 and "unfinished" in str(info.value)
    client.cancel(task_id)


def test_endpoint_metadata_list_and_allowlist(client, endpoint_id):
    meta = client.get_endpoint_metadata(endpoint_id)
    assert meta["endpoint_id"] == endpoint_id and meta["status"] == "online"
    assert meta["metadata"]["engine"] == "local" and meta["metadata"]["hostname"]
    assert endpoint_id in {e["endpoint_id"] for e in client.get_endpoints(role="owner")}
    allowed = client.get_allowed_functions(endpoint_id)
    assert allowed == {"endpoint_id": endpoint_id, "restricted": False, "functions": []}


def test_worker_hardware_details(client, endpoint_id):
    task_id = client.get_worker_hardware_details(endpoint_id)
    finished(client, task_id)
    report = client.get_result(task_id)
    assert "hostname:" in report and "cpus:" in report


def test_stop_endpoint_makes_its_agent_exit(client, make_endpoint):
    ep = make_endpoint("gc-stop")
    answer = client.stop_endpoint(ep.endpoint_id)
    assert answer["stopped"] is True
    wait_for(lambda: not ep.running(), "the stopped endpoint's agent to exit", WAIT)
    assert client.get_endpoint_status(ep.endpoint_id)["status"] == "offline"


def test_a_result_over_the_limit_is_max_result_size_exceeded(client, make_endpoint):
    ep = make_endpoint("gc-size-limit", result_size_limit=100_000)
    with Executor(ep.endpoint_id, client=client) as ex:
        future = ex.submit(bytes, 200_000)
        with pytest.raises(errors.MaxResultSizeExceeded) as info:
            future.result(timeout=WAIT)
    exc = info.value
    assert isinstance(exc, TaskExecutionFailed) and exc.result_size_limit == 100_000
    assert exc.result_size > 100_000 and "shared storage" in exc.remote_data
