"""Multi-user endpoints through real processes: broker, RabbitMQ, a manager run as root, and
children that run as the local accounts the identity mapping names."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import sys
import uuid
from pathlib import Path

from fnrelay import Client, Executor
from fnrelay.client import task_entry
from fnrelay.processes import pid_alive
from fnrelay.wire import canonical_config
from support.waiting import wait_for

WAIT = 120.0




def where_am_i():
    import os

    return {"uid": os.getuid(), "label": os.environ.get("MU_LABEL"),
            "shell_label": os.environ.get("MU_SHELL_LABEL"), "home": os.environ.get("HOME")}


def submit(client: Client, endpoint_id: str, config: dict) -> str:
    fid = client.register_function(where_am_i)
    answer = client.submit(endpoint_id, [task_entry(fid, (), {}, None, config)])
    return answer["task_ids"][0]


def finished(client: Client, task_id: str) -> dict:
    return wait_for(lambda: (r := client.task_record(task_id)) and not r["pending"] and r,
                    f"task {task_id}")


def run(client: Client, endpoint_id: str, config: dict) -> tuple[dict, dict]:
    """(result, task record) of where_am_i run with `config`."""
    task_id = submit(client, endpoint_id, config)
    record = finished(client, task_id)
    return client.get_result(task_id), record


def child_of(client: Client, manager, config: dict) -> str:
    """The child the broker made for `client`'s user and `config`: a record of that user's
    (ids are random), named '<manager>/<username>/<digest of the config>'."""
    username = client.whoami()["username"]
    digest = hashlib.sha256(canonical_config(config).encode()).hexdigest()[:8]
    mine = {e["name"]: e["endpoint_id"] for e in client.get_endpoints()}
    return mine[f"{manager.name}/{username}/{digest}"]


def children(manager) -> list[dict]:
    try:
        return json.loads((manager.dir / "children.json").read_text())["children"]
    except (OSError, ValueError):
        return []


def child_row(manager, child_id: str) -> dict:
    return next(r for r in children(manager) if r["child_id"] == child_id)


def failure(client: Client, task_id: str) -> str:
    record = finished(client, task_id)
    assert record["status"] == "failed", record
    return record["exception"]["message"]


def test_users_and_configs_select_their_children(make_manager, client, other_client,
                                                 accounts):
    manager = make_manager()
    mid = manager.endpoint_id
    seen = {}
    for who, c in (("alice", client), ("bob", other_client)):
        for label in ("red", "blue"):
            result, record = run(c, mid, {"label": label})
            account = pwd.getpwnam(accounts["a" if who == "alice" else "b"])
            assert result["uid"] == account.pw_uid  # ran as the mapped account
            assert result["label"] == label and result["shell_label"] == label
            expected = child_of(c, manager, {"label": label})
            assert record["endpoint_id"] == expected
            seen[(who, label)] = expected
    assert len(set(seen.values())) == 4

    # Same user and config again: the same child, still the same process.
    pid = child_row(manager, seen[("alice", "red")])["pid"]
    result, record = run(client, mid, {"label": "red"})
    assert record["endpoint_id"] == seen[("alice", "red")] and result["label"] == "red"
    assert child_row(manager, seen[("alice", "red")])["pid"] == pid

    # The manager's status lists the children with their accounts.
    out = manager.cli("status", manager.name)
    assert out.returncode == 0, out.stderr
    for (who, _), child_id in seen.items():
        line = next(ln for ln in out.stdout.splitlines() if ln.endswith(child_id))
        assert accounts["a" if who == "alice" else "b"] in line and "running" in line

    # The Executor's user_endpoint_config reaches the child the same way.
    with Executor(endpoint_id=mid, client=client,
                  user_endpoint_config={"label": "red"}) as ex:
        assert ex.submit(where_am_i).result(timeout=WAIT)["label"] == "red"

    # Children run with a home of their own, not root's.
    assert result["home"] == pwd.getpwnam(accounts["a"]).pw_dir

    # Their workers' start left no noise (runpy's RuntimeWarning) in their logs.
    for child_id in seen.values():
        log = (manager.dir / "children" / f"{child_id}.log").read_text()
        assert "RuntimeWarning" not in log, log

    # Stopping the manager stops its children.
    pids = [r["pid"] for r in children(manager) if r["pid"]]
    manager.stop()
    for p in pids:
        wait_for(lambda p=p: not pid_alive(p), f"child {p} to stop")


def test_refusals_fail_the_task_with_a_clear_error(make_manager, client, carol, broker,
                                                   broker_url):
    manager = make_manager()
    mid = manager.endpoint_id

    message = failure(client, submit(client, mid, {"partition": "debug; rm -rf /"}))
    assert "user_endpoint_config.partition" in message and "does not match" in message

    message = failure(client, submit(client, mid, {"colour": "red"}))
    assert "colour" in message

    message = failure(carol, submit(carol, mid, {}))
    assert "'carol' is not mapped" in message

    rooty = Client(broker_url, broker.add_user("rooty"))
    assert "root account" in failure(rooty, submit(rooty, mid, {}))
    daemonic = Client(broker_url, broker.add_user("daemonic"))
    assert "system account" in failure(daemonic, submit(daemonic, mid, {}))

    # After refusals the manager keeps serving others.
    assert run(client, mid, {"label": "ok"})[0]["label"] == "ok"


def test_injection_attempts_stay_data(make_manager, client):
    manager = make_manager()
    pwned = Path(f"/tmp/fnrelay-pwned-{uuid.uuid4().hex}")
    attempts = [
        "x\nengine:\n  type: evil",  # YAML: try to add keys
        "x\"\nworker_init: touch " + str(pwned),  # YAML: close the string
        f"x'; touch {pwned}; echo '",  # shell: close the quote
        f"$(touch {pwned})`touch {pwned}`",  # shell: substitution
    ]
    for label in attempts:
        result, _ = run(client, manager.endpoint_id, {"label": label})
        assert result["label"] == label and result["shell_label"] == label
    assert not pwned.exists()


def test_render_user_config_shows_what_a_child_gets(make_manager, accounts):
    manager = make_manager()
    out = manager.cli("render-user-config", manager.name, "--user-config",
                      '{"label": "a: b"}', "--user", "alice")
    assert out.returncode == 0, out.stderr
    assert 'MU_LABEL: "a: b"' in out.stdout
    out = manager.cli("render-user-config", manager.name, "--user-config",
                      '{"partition": "A B"}', "--user", "alice")
    assert out.returncode == 1 and "user_endpoint_config.partition" in out.stderr
    assert "Traceback" not in out.stderr


def test_killed_child_restarts_and_idle_child_stops(make_manager, client):
    manager = make_manager(idle_timeout=4)
    mid = manager.endpoint_id
    _, record = run(client, mid, {"label": "k"})
    child_id = record["endpoint_id"]
    pid = child_row(manager, child_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    result, record = run(client, mid, {"label": "k"})
    assert result["label"] == "k" and record["endpoint_id"] == child_id
    assert child_row(manager, child_id)["pid"] not in (None, pid)

    # Without tasks the child stops; the next task starts it again.
    wait_for(lambda: child_row(manager, child_id)["state"] == "idle", "the child to idle out")
    assert child_row(manager, child_id)["pid"] is None
    result, _ = run(client, mid, {"label": "k"})
    assert result["label"] == "k"


def test_the_template_sees_the_submitters_runtime(make_manager, client):
    """`_GC.user_runtime` is what the submitting SDK reported: for a task in fnrelay's format,
    the Python it was serialized on (GC's templates read `python.version`)."""
    manager = make_manager()
    (manager.dir / "user_config_template.yaml.j2").write_text(
        "engine:\n  type: local\n  max_workers: 1\nenvironment:\n"
        "  MU_LABEL: {{ ((_GC.user_runtime.python | default({})).version | default('none'))"
        " | tojson }}\n")
    result, _ = run(client, manager.endpoint_id, {"label": "runtime"})
    assert result["label"] == "{}.{}".format(*sys.version_info[:2])
