"""Listing one's tasks and showing one (REST, SDK and the ``fnrelay task`` command).

Each test module user is new, so the lists hold exactly the tasks made here; "mallory" is an
ordinary account that must never see them, whatever filter she tries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fnrelay import Client, ShellFunction
from fnrelay.devstack.services import LocalEndpoint
from support.session import MARKER
from support.waiting import wait_for

WAIT = 60.0


def square(x):
    return x * x


def chatty(x):
    print(f"hello from task {x}")
    import sys as _sys

    print("a warning on stderr", file=_sys.stderr)
    return x + 1


def broken(x):
    raise ValueError(f"bad input {x}")


@pytest.fixture(scope="module")
def owner(broker, _workdir: Path) -> Iterator[tuple[Client, str, str]]:
    """(client, token, endpoint id) of a user of this module alone, with a running endpoint."""
    name = f"lister-{uuid.uuid4().hex[:6]}"
    token = broker.add_user(name)
    ep = LocalEndpoint(_workdir / "endpoints" / name, "tasks", broker.url, token,
                       marker=MARKER).configure(max_workers=2)
    ep.start(foreground=True)
    yield Client(broker.url, token), token, ep.endpoint_id
    ep.stop()


@pytest.fixture(scope="module")
def mallory(broker) -> Client:
    return Client(broker.url, broker.add_user(f"mallory-{uuid.uuid4().hex[:6]}"))


def finished(client: Client, task_id: str) -> dict:
    return wait_for(lambda: (r := client.task_record(task_id)) and not r["pending"] and r,
                    f"task {task_id}", WAIT)


def cli(home: Path, broker_url: str, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNRELAY_")}
    env.update(FNRELAY_HOME=str(home), FNRELAY_BROKER_URL=broker_url, FNRELAY_TOKEN=token)
    exe = Path(sys.executable).parent / "fnrelay"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                          timeout=WAIT)


def rest_list(client: Client, params: dict) -> dict:
    """GET /v1/tasks as any HTTP client sends it."""
    answer = requests.get(f"{client.broker_url}/v1/tasks", params=params, timeout=10,
                          headers={"Authorization": f"Bearer {client.authorizer.access_token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def made(owner) -> dict[str, list[str]]:
    """Tasks of the owner: three squares (success), one failure; ids by kind, oldest first."""
    client, _, endpoint_id = owner
    sq, bad = client.register_function(square), client.register_function(broken)
    ids = {"square": [client.run(i, endpoint_id=endpoint_id, function_id=sq) for i in range(3)],
           "broken": [client.run(1, endpoint_id=endpoint_id, function_id=bad)],
           "functions": [sq, bad]}
    for task_id in ids["square"] + ids["broken"]:
        finished(client, task_id)
    return ids


def test_list_is_newest_first_filtered_and_paginated(owner, made):
    client, _, endpoint_id = owner
    everything = [t["task_id"] for t in client.list_tasks(limit=None)]
    assert everything == list(reversed(made["square"] + made["broken"]))

    failed = client.list_tasks("failed")
    assert [t["task_id"] for t in failed] == made["broken"]
    assert failed[0]["status"] == "failed" and failed[0]["pending"] is False
    squares = client.list_tasks(function_id=made["functions"][0], endpoint_id=endpoint_id)
    assert {t["task_id"] for t in squares} == set(made["square"])
    assert client.list_tasks(["running", "received"]) == []

    first = client.list_tasks(limit=2)  # the SDK asks for pages of the size it needs
    assert [t["task_id"] for t in first] == everything[:2]
    page = rest_list(client, {"limit": 3})
    rest = rest_list(client, {"limit": 3, "after": page["next"]})
    assert [t["task_id"] for t in page["tasks"] + rest["tasks"]] == everything
    assert rest["next"] is None

    created = [t["created"] for t in client.list_tasks()]
    assert [t["task_id"] for t in client.list_tasks(since=created[1])] == everything[:2]
    assert [t["task_id"] for t in client.list_tasks(until=created[1])] == everything[2:]
    assert client.list_tasks(since=time.time() + 60) == []


def test_another_user_lists_none_of_the_owners_tasks(owner, made, mallory):
    _, _, endpoint_id = owner
    assert mallory.list_tasks(limit=None) == []
    assert mallory.list_tasks(endpoint_id=endpoint_id) == []
    assert mallory.list_tasks(function_id=made["functions"][0]) == []
    assert rest_list(mallory, {"endpoint_id": endpoint_id}) == {"tasks": [], "next": None}


def test_bad_list_queries_are_refused_with_a_reason(owner):
    client, token, _ = owner
    for params, words in (({"status": "done"}, "unknown task state 'done'"),
                          ({"limit": 0}, "'limit' must be between"),
                          ({"after": "x"}, "'after' must be"),
                          ({"after": "9" * 30}, "'after' must be"),
                          ({"after": "\u00b2"}, "'after' must be"),
                          ({"since": "nan"}, "since")):
        answer = requests.get(f"{client.broker_url}/v1/tasks", params=params, timeout=10,
                              headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 422 and words in answer.text, answer.text


def test_cli_task_list_table_json_and_filters(owner, made, broker, tmp_path):
    _, token, endpoint_id = owner
    table = cli(tmp_path, broker.url, token, "task", "list", "--endpoint", "tasks")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["task", "status"]
    assert [line.split()[0] for line in lines[1:]] == list(reversed(made["square"]
                                                                    + made["broken"]))
    as_json = cli(tmp_path, broker.url, token, "task", "list", "--json", "--state", "failed",
                  "--since", "1h", "--until", "2099-01-01")
    assert as_json.returncode == 0, as_json.stderr
    assert [t["task_id"] for t in json.loads(as_json.stdout)] == made["broken"]

    for args, words in ((["--since", "yesterday"], "--since: 'yesterday' is neither"),
                        (["--state", "done"], "'done' is not one of"),
                        (["--endpoint", "nowhere"], "--endpoint: 'nowhere' is neither")):
        bad = cli(tmp_path, broker.url, token, "task", "list", *args)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr


def test_cli_task_show_prints_result_error_and_output(owner, made, broker, tmp_path):
    client, token, endpoint_id = owner
    shown = cli(tmp_path, broker.url, token, "task", "show", made["square"][2])
    assert shown.returncode == 0, shown.stderr
    assert "result    4" in shown.stdout

    failed = cli(tmp_path, broker.url, token, "task", "show", made["broken"][0])
    assert "error     builtins.ValueError: bad input 1" in failed.stdout
    assert "traceback:" in failed.stdout and "raise ValueError" in failed.stdout

    printed = client.run(41, endpoint_id=endpoint_id,
                         function_id=client.register_function(chatty))
    details = finished(client, printed)["details"]
    assert "hello from task 41" in details["stdout_tail"]
    shown = cli(tmp_path, broker.url, token, "task", "show", printed)
    assert "result    42" in shown.stdout
    assert "stdout (last lines):\n  hello from task 41" in shown.stdout
    assert "stderr (last lines):\n  a warning on stderr" in shown.stdout

    command = client.run(endpoint_id=endpoint_id, function_id=client.register_function(
        ShellFunction("echo out-line; echo err-line >&2; exit 3")))
    finished(client, command)
    shown = cli(tmp_path, broker.url, token, "task", "show", command)
    assert "returncode 3" in shown.stdout and "out-line" in shown.stdout, shown.stdout
