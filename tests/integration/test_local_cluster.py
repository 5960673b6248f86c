"""`fnrelay local up --rabbitmq-nodes 3`: a RabbitMQ cluster of three nodes on this host with
quorum queues, behind the same broker and endpoint; the SDK works with the exported variables
alone, and `down` stops every node; `up` again boots them on their data (about 60 s here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests
from integration.test_local_stack import (
    RUN_A_FUNCTION,
    clean_env,
    fnrelay,
    left_running,
    parse_exports,
    stack_dir,  # noqa: F401 - the fixture
)


def up_and_run_a_function(path: Path) -> None:
    up = fnrelay("local", "up", "--rabbitmq-nodes", "3", "--dir", str(path))
    assert up.returncode == 0, up.stderr
    ran = subprocess.run([sys.executable, "-c", RUN_A_FUNCTION], capture_output=True,
                         text=True, timeout=300, env={**clean_env(), **parse_exports(up.stdout)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "90"


def test_up_runs_a_three_node_cluster_with_quorum_queues_and_down_stops_it(stack_dir):  # noqa: F811
    up_and_run_a_function(stack_dir)

    state = json.loads((stack_dir / "state.json").read_text())
    nodes = state["rabbitmq_nodes"]
    assert len({n["amqp_port"] for n in nodes}) == 3
    first = nodes[0]
    auth = (first["admin_user"], first["admin_password"])
    api = f"http://127.0.0.1:{first['management_port']}/api"
    members = requests.get(f"{api}/nodes", auth=auth, timeout=10).json()
    assert sorted(m["name"] for m in members if m["running"]) == sorted(
        f"fnrelay-{n['amqp_port']}@localhost" for n in nodes)
    queues = [q for q in requests.get(f"{api}/queues", auth=auth, timeout=10).json()
              if q["name"].startswith("fnrelay.")]
    assert queues and {q["type"] for q in queues} == {"quorum"}

    status = fnrelay("local", "status", "--dir", str(stack_dir))
    assert status.returncode == 0, status.stdout
    assert "nodes=3" in status.stdout

    down = fnrelay("local", "down", "--dir", str(stack_dir))
    assert down.returncode == 0, down.stderr
    assert left_running(stack_dir) == []

    up_and_run_a_function(stack_dir)  # the nodes boot again on their data, already joined
    assert fnrelay("local", "down", "--dir", str(stack_dir)).returncode == 0
    assert left_running(stack_dir) == []
