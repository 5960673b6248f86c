"""End to end through real processes: SDK -> broker -> RabbitMQ -> endpoint -> back.

Fixtures (tests/conftest.py): ``client`` (alice), ``other_client`` (bob), ``endpoint_id`` (a
running local endpoint of alice's), ``broker_url``, ``make_endpoint(name)`` (a handle with
``endpoint_id``, ``stop()``, ``start()``).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fnrelay import Client, Executor, ShellFunction, ShellResult, errors
from fnrelay.processes import pid_alive
from support.waiting import wait_for, wait_recorded

WAIT = 120.0  # upper bound for anything to happen; a bound, not a timing assertion




def result_of(client: Client, task_id: str, timeout: float = WAIT) -> object:
    """get_result once the task is done (re-raises what get_result raises)."""
    wait_for(lambda: not client.task_record(task_id)["pending"], f"task {task_id}", timeout)
    return client.get_result(task_id)


def square(x):
    return x * x


def fail_with_value_error(n):
    raise ValueError(f"bad input {n}")


# --- functions, tasks, results -----------------------------------------------------------------
def test_register_run_and_get_result(client, endpoint_id):
    offset = 5

    def add_offset(x, scale=1):  # a closure from a module the endpoint cannot import
        return (x + offset) * scale

    function_id = client.register_function(add_offset, description="adds")
    task_id = client.run(2, endpoint_id=endpoint_id, function_id=function_id, scale=3)
    assert result_of(client, task_id) == 21

    task = client.get_task(task_id)
    assert task["status"] == "success" and task["pending"] is False
    states = [h["status"] for h in task["history"]]
    assert states[0] == "received" and states[-1] == "success"
    assert "waiting-for-endpoint" in states
    times = [h["time"] for h in task["history"]]
    assert times == sorted(times)


def test_get_result_of_a_pending_task_raises_task_pending(client, make_endpoint):
    ep = make_endpoint("pending-check")
    ep.stop()
    task_id = client.run(1, endpoint_id=ep.endpoint_id,
                         function_id=client.register_function(square))
    with pytest.raises(errors.TaskPending) as info:
        client.get_result(task_id)
    assert info.value.task_id == task_id
    ep.start()
    assert result_of(client, task_id) == 1


def test_same_code_registers_to_the_same_id(client, broker_url):
    token = client.authorizer.access_token
    assert Client(broker_url, token).register_function(square) == client.register_function(square)


def test_batch_run_and_get_batch_result(client, endpoint_id):
    function_id = client.register_function(square)
    batch = client.create_batch()
    for i in range(20):
        batch.add(function_id, args=(i,))
    answer = client.batch_run(endpoint_id, batch)
    task_ids = answer["task_ids"]
    assert answer["tasks"] == {function_id: task_ids} and len(set(task_ids)) == 20

    def all_done():
        results = client.get_batch_result(task_ids)
        return results if not any(r["pending"] for r in results.values()) else None

    results = wait_for(all_done, "the batch")
    assert [results[t]["result"] for t in task_ids] == [i * i for i in range(20)]
    assert all(results[t]["status"] == "success" for t in task_ids)


def test_batch_tasks_share_one_task_group(client, endpoint_id):
    group = client.create_task_group()
    batch = client.create_batch(task_group_id=group["task_group_id"])
    function_id = client.register_function(square)
    for i in range(3):
        batch.add(function_id, args=(i,))
    answer = client.batch_run(endpoint_id, batch)
    assert answer["task_group_id"] == group["task_group_id"]
    assert client.get_task_group(group["task_group_id"])["task_ids"] == answer["task_ids"]


def test_executor_futures_and_map(client, endpoint_id):
    with Executor(endpoint_id, client=client) as ex:
        futures = [ex.submit(square, i) for i in range(200)]
        done = list(cf.as_completed(futures, timeout=WAIT))
        assert len(done) == 200
        assert [f.result() for f in futures] == [i * i for i in range(200)]
        assert all(f.task_id for f in futures)
        assert len({f.task_id for f in futures}) == 200
        assert list(ex.map(square, range(50), timeout=WAIT)) == [i * i for i in range(50)]


def test_executor_runs_registered_functions_and_keyword_arguments(client, endpoint_id):
    function_id = client.register_function(divmod)
    with Executor(endpoint_id, client=client, batch_size=4) as ex:
        futures = [ex.submit_to_registered_function(function_id, args=(i, 3)) for i in range(10)]
        assert [f.result(timeout=WAIT) for f in futures] == [divmod(i, 3) for i in range(10)]
        assert ex.submit(sorted, [3, 1, 2], reverse=True).result(timeout=WAIT) == [3, 2, 1]


def test_ids_may_be_given_as_uuid_objects(client, endpoint_id):
    # Globus Compute takes UUIDs; on the direct path these failed with "Object of type UUID
    # is not JSON serializable".
    function_id = uuid.UUID(client.register_function(square))
    with Executor(uuid.UUID(endpoint_id), client=client) as ex:
        assert ex.submit(square, 3).result(timeout=WAIT) == 9
        assert ex.submit_to_registered_function(function_id, (4,)).result(timeout=WAIT) == 16
    task_id = client.run(5, endpoint_id=uuid.UUID(endpoint_id), function_id=function_id)
    assert result_of(client, task_id) == 25


def test_two_executors_do_not_steal_each_others_results(client, endpoint_id):
    def tag(name, i):
        return f"{name}-{i}"

    with Executor(endpoint_id, client=client) as a, Executor(endpoint_id, client=client) as b:
        fa = [a.submit(tag, "a", i) for i in range(40)]
        fb = [b.submit(tag, "b", i) for i in range(40)]
        assert [f.result(timeout=WAIT) for f in fa] == [f"a-{i}" for i in range(40)]
        assert [f.result(timeout=WAIT) for f in fb] == [f"b-{i}" for i in range(40)]
        assert a.task_group_id != b.task_group_id


def test_shell_function(client, endpoint_id):
    shell = ShellFunction("echo {greeting}; echo problem >&2; exit 3")
    task_id = client.run(endpoint_id=endpoint_id, function_id=client.register_function(shell),
                         greeting="hello world")
    result = result_of(client, task_id)
    assert isinstance(result, ShellResult)
    assert (result.returncode, result.stdout, result.stderr) == (3, "hello world\n", "problem\n")
    with Executor(endpoint_id, client=client) as ex:
        assert ex.submit(ShellFunction("echo $(( {n} * 2 ))"), n=21).result(WAIT).stdout == "42\n"


def test_remote_exception_is_reraised_with_its_traceback(client, endpoint_id):
    task_id = client.run(7, endpoint_id=endpoint_id,
                         function_id=client.register_function(fail_with_value_error))
    with pytest.raises(ValueError, match="bad input 7") as info:
        result_of(client, task_id)
    assert "fail_with_value_error" in info.value.remote_traceback
    assert client.task_record(task_id)["status"] == "failed"

    with Executor(endpoint_id, client=client) as ex:
        future = ex.submit(fail_with_value_error, 8)
        exc = future.exception(timeout=WAIT)
    assert isinstance(exc, ValueError) and "bad input 8" in str(exc)
    assert "fail_with_value_error" in exc.remote_traceback


# --- cancellation ------------------------------------------------------------------------------
def test_cancel_a_queued_task_it_never_runs(client, make_endpoint, tmp_path):
    ep = make_endpoint("cancel-queued")
    ep.stop()
    marker = tmp_path / "ran"
    function_id = client.register_function(ShellFunction("touch {path}"))
    task_id = client.run(endpoint_id=ep.endpoint_id, function_id=function_id, path=str(marker))
    assert client.cancel(task_id) == "cancelled"
    with pytest.raises(errors.TaskCancelled):
        client.get_result(task_id)

    ep.start()  # the endpoint now receives the queue's content; the cancelled task is skipped
    barrier = client.run(endpoint_id=ep.endpoint_id, function_id=function_id,
                         path=str(tmp_path / "barrier"))
    assert result_of(client, barrier).returncode == 0
    assert not marker.exists()
    task = client.task_record(task_id)
    assert task["status"] == "cancelled"
    assert "running" not in [h["status"] for h in task["history"]]


def test_cancel_a_running_task_kills_it(client, endpoint_id, tmp_path):
    pidfile = tmp_path / "pid"
    sleeper = ShellFunction("sleep 300 & echo $! > {pidfile}; wait")
    task_id = client.run(endpoint_id=endpoint_id, function_id=client.register_function(sleeper),
                         pidfile=str(pidfile))
    wait_recorded(client, task_id, "running")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the sleep to start")
    pid = int(pidfile.read_text())
    assert pid_alive(pid)

    assert client.cancel(task_id) == "cancelled"
    wait_recorded(client, task_id, "cancelled")
    wait_for(lambda: not pid_alive(pid), "the sleep process to be killed")
    with pytest.raises(errors.TaskCancelled):
        client.get_result(task_id)


def test_executor_future_cancel_keeps_concurrent_futures_meaning(client, make_endpoint):
    ep = make_endpoint("future-cancel")
    ep.stop()
    with Executor(ep.endpoint_id, client=client) as ex:
        queued = ex.submit(square, 3)
        wait_for(lambda: queued.task_id, "the task to be submitted")
        assert queued.cancel() is True  # at the broker, not started
        assert queued.cancelled()
        assert client.task_record(queued.task_id)["status"] == "cancelled"

        ep.start()
        sleeping = ex.submit(time.sleep, 300)
        wait_for(lambda: sleeping.task_id, "the sleep to be submitted")
        wait_recorded(client, sleeping.task_id, "running")
        assert sleeping.cancel() is False  # it has started: concurrent.futures says no
        assert client.cancel(sleeping.task_id) == "cancelled"
        with pytest.raises(cf.CancelledError):
            sleeping.result(timeout=WAIT)


def test_shutdown_with_cancel_futures_cancels_what_was_not_sent(client, endpoint_id):
    ex = Executor(endpoint_id, client=client, batch_size=1)
    futures = [ex.submit(square, i) for i in range(50)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    for f in futures:
        assert f.cancelled() or f.result() == futures.index(f) ** 2


# --- errors ------------------------------------------------------------------------------------
def test_bad_token_raises_authentication_error(broker_url):
    with pytest.raises(errors.AuthenticationError):
        Client(broker_url, "not-a-token").whoami()


def test_unknown_ids_raise_not_found(client, endpoint_id):
    unknown = str(uuid.uuid4())
    with pytest.raises(errors.NotFoundError):
        client.get_task(unknown)
    with pytest.raises(errors.NotFoundError):
        client.get_result(unknown)
    assert client.get_batch_result([unknown]) == {}  # skipped, as Globus Compute does
    with pytest.raises(errors.NotFoundError):
        client.get_endpoint_status(unknown)
    with pytest.raises(errors.NotFoundError):
        client.run(endpoint_id=endpoint_id, function_id=unknown)
    with pytest.raises(errors.NotFoundError):
        client.run(endpoint_id=unknown, function_id=client.register_function(square))


def test_unknown_function_fails_the_executor_future(client, endpoint_id):
    with Executor(endpoint_id, client=client) as ex:
        future = ex.submit_to_registered_function(str(uuid.uuid4()), args=(1,))
        assert isinstance(future.exception(timeout=WAIT), errors.NotFoundError)


def test_oversized_payload_raises_payload_too_large(client, endpoint_id):
    function_id = client.register_function(len)
    with pytest.raises(errors.PayloadTooLargeError, match="limit"):
        client.run(b"x" * 12_000_000, endpoint_id=endpoint_id, function_id=function_id)


def test_unserializable_argument_is_refused_before_sending(client, endpoint_id):
    with Executor(endpoint_id, client=client) as ex, pytest.raises(
        errors.SerializationError, match="generator"
    ):
        ex.submit(square, (i for i in range(3)))


def test_retried_submit_with_the_same_idempotency_key_creates_tasks_once(client, endpoint_id):
    group_id = client.create_task_group()["task_group_id"]
    body = {
        "endpoint_id": endpoint_id,
        "task_group_id": group_id,
        "tasks": [{"function_id": client.register_function(square), "payload": '03\n[[4],{}]',
                   "resource_specification": {}, "user_endpoint_config": {}}],
    }
    key = str(uuid.uuid4())
    first = client.post("submit", data=body, headers={"Idempotency-Key": key}).data
    again = client.post("submit", data=body, headers={"Idempotency-Key": key}).data
    assert again["task_ids"] == first["task_ids"]
    assert client.get_task_group(group_id)["task_ids"] == first["task_ids"]
    assert result_of(client, first["task_ids"][0]) == 16


def test_each_submit_uses_a_fresh_idempotency_key(client, endpoint_id):
    function_id = client.register_function(square)
    first = client.run(2, endpoint_id=endpoint_id, function_id=function_id)
    second = client.run(2, endpoint_id=endpoint_id, function_id=function_id)
    assert first != second


# --- endpoints and users -----------------------------------------------------------------------
def test_endpoint_status_online_then_offline_after_stop(client, make_endpoint):
    ep = make_endpoint("status-check")
    online = wait_for(
        lambda: (s := client.get_endpoint_status(ep.endpoint_id))["status"] == "online" and s,
        "the endpoint to be online")
    # What the endpoint's heartbeat said, for its owner: engine, workers, its Python.
    details = online["details"]
    assert details["engine"] == "local" and details["workers"] >= 1
    assert details["python_version"] == platform.python_version()
    listed = {e["endpoint_id"]: e for e in client.get_endpoints()}
    assert listed[ep.endpoint_id]["details"]["python_version"] == platform.python_version()
    ep.stop()
    status = wait_for(
        lambda: (s := client.get_endpoint_status(ep.endpoint_id))["status"] == "offline" and s,
        "the endpoint to be offline",
    )
    assert status["last_heartbeat"] is not None


def test_another_user_cannot_see_alices_tasks(client, other_client, endpoint_id):
    task_id = client.run(3, endpoint_id=endpoint_id, function_id=client.register_function(square))
    for call in (other_client.get_task, other_client.get_result, other_client.cancel):
        with pytest.raises(errors.NotFoundError):
            call(task_id)
    with pytest.raises(errors.NotFoundError):
        other_client.get_endpoint_status(endpoint_id)
    with pytest.raises((errors.NotFoundError, errors.AuthenticationError)):
        other_client.run(endpoint_id=endpoint_id,
                         function_id=other_client.register_function(square))
    assert result_of(client, task_id) == 9


# --- the fnrelay command -------------------------------------------------------------------------
def fnrelay_cli(home: Path, *args: str, stdin: str | None = None
                ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    env["FNRELAY_HOME"] = str(home)
    exe = Path(sys.executable).parent / "fnrelay"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                          input=stdin)


def test_cli_login_whoami_and_task_show(client, broker_url, endpoint_id, tmp_path):
    token = client.authorizer.access_token
    bad = fnrelay_cli(tmp_path, "login", "--broker-url", broker_url, "--token", "-",
                      stdin="wrong\n")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    ok = fnrelay_cli(tmp_path, "login", "--broker-url", broker_url, "--token", "-",
                     stdin=token)
    assert ok.returncode == 0, ok.stderr
    assert "alice" in fnrelay_cli(tmp_path, "whoami").stdout

    task_id = client.run(6, endpoint_id=endpoint_id, function_id=client.register_function(square))
    result_of(client, task_id)
    shown = fnrelay_cli(tmp_path, "task", "show", task_id)
    assert shown.returncode == 0
    assert "success" in shown.stdout and "received" in shown.stdout

    missing = fnrelay_cli(tmp_path, "task", "show", str(uuid.uuid4()))
    assert missing.returncode != 0 and "not found" in missing.stderr
    assert endpoint_id in fnrelay_cli(tmp_path, "endpoints").stdout
