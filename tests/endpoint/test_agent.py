"""The endpoint agent end to end: real broker, real RabbitMQ, the real `fnrelay-endpoint`."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests

from fnrelay import serialize
from fnrelay.processes import pid_alive
from support.waiting import wait_for

WAIT = 60.0  # upper bound for something to happen, not a timing assertion




def nap_and_echo(x, seconds=0):  # type: ignore[no-untyped-def]

    time.sleep(seconds)
    return x


def fails():  # type: ignore[no-untyped-def]
    raise ValueError("bad input")


def spawn_sleep_and_wait(pidfile):  # type: ignore[no-untyped-def]
    import os
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.rename(pidfile + ".tmp", pidfile)
    return child.wait()


class Rest:
    def __init__(self, url: str, token: str):
        self.url = url + "/v1"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw) -> dict:  # type: ignore[no-untyped-def]
        r = self.http.request(method, self.url + path, timeout=30, **kw)
        assert r.ok, r.text
        return r.json()

    def submit(self, endpoint_id: str, fn, *calls: tuple) -> list[str]:  # type: ignore[no-untyped-def]
        fid = self.call("POST", "/functions", json={
            "function": serialize.serialize_function(fn), "function_name": fn.__name__})[
            "function_id"]
        tasks = [{"function_id": fid, "payload": serialize.serialize_args(args, {})}
                 for args in calls]
        return self.call("POST", "/submit", headers={"Idempotency-Key": str(uuid.uuid4())},
                         json={"endpoint_id": endpoint_id, "tasks": tasks})["task_ids"]

    def task(self, task_id: str) -> dict:
        return self.call("GET", f"/tasks/{task_id}")

    def done(self, task_id: str) -> dict:
        return wait_for(lambda: (t := self.task(task_id))["pending"] is False and t,
                        f"task {task_id} to finish")

    def endpoint_status(self, endpoint_id: str) -> str:
        return self.call("GET", f"/endpoints/{endpoint_id}/status")["status"]


@pytest.fixture
def rest(broker) -> Rest:  # type: ignore[no-untyped-def]
    return Rest(broker.url, broker.token)


@pytest.fixture
def endpoint(broker_cli) -> str:  # type: ignore[no-untyped-def]
    broker_cli("configure", "ep", "--max-workers", "2")
    out = broker_cli("start", "ep")
    assert "running" in out.stdout
    return broker_cli.endpoint_id("ep")


def test_runs_tasks_and_reports_failures(broker_cli, rest, endpoint) -> None:  # type: ignore[no-untyped-def]
    assert rest.endpoint_status(endpoint) == "online"
    ids = rest.submit(endpoint, nap_and_echo, *[(i,) for i in range(20)])
    assert [serialize.deserialize(rest.done(t)["result"]) for t in ids] == list(range(20))

    (bad,) = rest.submit(endpoint, fails, ())
    record = rest.done(bad)
    assert record["status"] == "failed"
    assert record["exception"]["type"] == "builtins.ValueError"
    assert "bad input" in record["exception"]["traceback"]
    status = broker_cli("status", "ep").stdout
    assert "running (pid" in status and "broker says: online" in status
    # the workers' start left no noise (runpy's RuntimeWarning) in the endpoint's log
    log = (broker_cli.home / "endpoints" / "ep" / "endpoint.log").read_text()
    assert "RuntimeWarning" not in log, log


def test_stop_goes_offline_and_restart_runs_what_was_left(broker_cli, rest, endpoint) -> None:  # type: ignore[no-untyped-def]
    (running,) = rest.submit(endpoint, nap_and_echo, ("slow", 3))
    wait_for(lambda: rest.task(running)["status"] == "running", "the task to run")
    broker_cli("stop", "ep")
    assert rest.endpoint_status(endpoint) == "offline"  # said `stopping`: offline at once
    (later,) = rest.submit(endpoint, nap_and_echo, ("later",))  # waits in the queue

    broker_cli("start", "ep")
    assert broker_cli.endpoint_id("ep") == endpoint
    assert serialize.deserialize(rest.done(running)["result"]) == "slow"  # re-run: journal
    assert serialize.deserialize(rest.done(later)["result"]) == "later"


def test_a_killed_endpoint_loses_nothing(broker_cli, rest, endpoint) -> None:  # type: ignore[no-untyped-def]
    ids = rest.submit(endpoint, nap_and_echo, *[(i, 2) for i in range(4)])
    wait_for(lambda: rest.task(ids[0])["status"] == "running", "a task to run")
    os.kill(broker_cli.pid("ep"), signal.SIGKILL)
    wait_for(lambda: "stopped" in broker_cli("list").stdout, "the endpoint to be gone")
    broker_cli("start", "ep")
    assert [serialize.deserialize(rest.done(t)["result"]) for t in ids] == [0, 1, 2, 3]


def test_cancel_of_running_task_kills_its_children(broker_cli, rest, endpoint,  # type: ignore[no-untyped-def]
                                                   tmp_path: Path) -> None:
    pidfile = str(tmp_path / "sleep.pid")
    (tid,) = rest.submit(endpoint, spawn_sleep_and_wait, (pidfile,))
    pid = int(wait_for(lambda: os.path.exists(pidfile) and Path(pidfile).read_text(),
                       "the task to start its child"))
    assert rest.call("POST", f"/tasks/{tid}/cancel")["status"] == "cancelled"

    wait_for(lambda: not pid_alive(pid), "the cancelled task's child to be killed")
    (after,) = rest.submit(endpoint, nap_and_echo, ("after",))
    assert serialize.deserialize(rest.done(after)["result"]) == "after"


def test_delete_removes_it_here_and_at_the_broker(broker_cli, rest, endpoint) -> None:  # type: ignore[no-untyped-def]
    broker_cli("delete", "ep", "--yes")
    assert not (broker_cli.home / "endpoints" / "ep").exists()
    r = rest.http.get(f"{rest.url}/endpoints/{endpoint}/status", timeout=30)
    assert r.status_code == 404
