"""The official, unmodified globus-compute-endpoint 4.x (from .venv-gc) joins a real fnrelay
broker on port 5000: it registers through /v3/endpoints with a fnrelay user's client id and
secret, reads online through the official SDK, starts a user endpoint when the broker sends
its `cmd_start_endpoint`, and runs the official SDK's tasks (issue 19, item 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
import requests
import yaml
from pika.exceptions import ChannelClosedByBroker

from fnrelay.devstack.processes import port_free, spawn, stop_pid
from fnrelay.devstack.services import BrokerServer
from support.session import MARKER

sys.path.insert(0, str(Path(__file__).parent))
from support_official import (  # noqa: E402
    GC_VENV,
    PORT,
    gc_venv,  # noqa: F401 - the fixture pytestmark names
    needs_gc_venv,
    run_sdk,
    sdk_env,
)

pytestmark = [needs_gc_venv, pytest.mark.timeout(300)]

GCE = str(GC_VENV / "bin" / "globus-compute-endpoint")
NAME = "gcep"


@dataclass
class Party:
    user_id: str
    token: str
    home: Path

    def env(self) -> dict[str, str]:
        return sdk_env(self.home, self.user_id, self.token)

    def call(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"http://127.0.0.1:{PORT}{path}", timeout=10,
                                headers={"Authorization": f"Bearer {self.token}"}, **kw)


@dataclass
class Stack:
    broker: BrokerServer
    alice: Party
    mallory: Party
    gc_dir: Path
    endpoint_id: str
    proc: subprocess.Popen


def _party(broker: BrokerServer, name: str, d: Path) -> Party:
    token = broker.add_user(name)
    who = requests.get(f"{broker.url}/v1/whoami", timeout=10,
                       headers={"Authorization": f"Bearer {token}"}).json()
    home = d / f"home-{name}"
    home.mkdir(parents=True)
    return Party(who["user_id"], token, home)


def endpoint_env(owner: Party, gc_dir: Path) -> dict[str, str]:
    """The official endpoint's environment: local services, the owner's client id and secret,
    its configuration directory, and the venv's commands first (its children exec them)."""
    env = owner.env()
    env["GLOBUS_COMPUTE_USER_DIR"] = str(gc_dir)
    env["PATH"] = f"{GC_VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def configure(env: dict[str, str], gc_dir: Path) -> Path:
    """`globus-compute-endpoint configure` as GC documents it (as root: --contact-email),
    then the site's choices: no identity mapping (children run as the endpoint's own user,
    for its owner's identity only), a 5 s heartbeat, and the user endpoints' directory."""
    out = subprocess.run([GCE, "configure", NAME, "--contact-email", "ops@example.org"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ep_dir = gc_dir / NAME
    config = yaml.safe_load((ep_dir / "config.yaml").read_text())
    config.pop("identity_mapping_config_path", None)
    config["heartbeat_period"] = 5
    (ep_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (ep_dir / "user_environment.yaml").write_text(yaml.safe_dump(
        {"GLOBUS_COMPUTE_USER_DIR": str(gc_dir / "users")}))
    return ep_dir


def wait_online(party: Party, eid_file: Path, proc: subprocess.Popen, log: Path,
                timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the endpoint exited:\n{log.read_text()[-4000:]}"
        if eid_file.exists():
            eid = json.loads(eid_file.read_text())["endpoint_id"]
            r = party.call("GET", f"/v2/endpoints/{eid}/status")
            if r.status_code == 200 and r.json()["status"] == "online":
                return eid
        time.sleep(0.5)
    raise AssertionError(f"the endpoint is not online:\n{log.read_text()[-4000:]}")


def _stop_tree(proc: subprocess.Popen, marker: str) -> None:
    """Stop the endpoint, then any user endpoint it started (own sessions) that outlived it."""
    stop_pid(proc.pid, timeout=20, group=True)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def stack(rabbitmq, new_vhost, _workdir: Path) -> Iterator[Stack]:
    if not port_free(PORT):
        pytest.fail(f"port {PORT} is taken: the official packages reach only localhost:{PORT}")
    d = _workdir / f"gc-endpoint-{uuid.uuid4().hex[:6]}"
    broker = BrokerServer(d / "broker", new_vhost("gc-endpoint"), port=PORT, marker=MARKER,
                          management_url=rabbitmq.management_url,
                          extra_args=["--heartbeat-threshold", "20"])
    broker.start()
    proc = None
    try:
        alice, mallory = _party(broker, "alice", d), _party(broker, "mallory", d)
        gc_dir = d / "gc-home"
        env = endpoint_env(alice, gc_dir)
        ep_dir = configure(env, gc_dir)
        log = d / "endpoint.console.log"
        proc = spawn([GCE, "start", NAME], log, env)
        eid = wait_online(alice, ep_dir / "endpoint.json", proc, log)
        yield Stack(broker, alice, mallory, gc_dir, eid, proc)
    finally:
        if proc is not None:
            _stop_tree(proc, str(gc_dir))
        broker.stop()


def test_registers_and_reads_online_through_the_official_sdk(stack: Stack):
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        c = Client()
        print(json.dumps({{"status": c.get_endpoint_status("{stack.endpoint_id}")["status"],
                          "mine": [e["uuid"] for e in c.get_endpoints()]}}))
    """, stack.alice.env())
    assert got["status"] == "online"
    assert stack.endpoint_id in got["mine"]


def test_official_sdk_tasks_run_on_the_official_endpoint(stack: Stack):
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Executor
        from globus_compute_sdk.errors import TaskExecutionFailed
        def square(x):
            return x * x
        def boom():
            return 1 / 0
        with Executor(endpoint_id="{stack.endpoint_id}") as ex:
            futs = [ex.submit(square, i) for i in range(4)]
            values = [f.result(timeout=90) for f in futs]
            try:
                ex.submit(boom).result(timeout=60)
                err = None
            except Exception as e:
                err = f"{{type(e).__name__}}: {{e}}"
        print(json.dumps({{"values": values, "err": err}}))
    """, stack.alice.env())
    assert got["values"] == [0, 1, 4, 9]
    assert "ZeroDivisionError" in got["err"]


def test_another_user_cannot_take_the_endpoint_or_read_its_queues(stack: Stack):
    m, eid = stack.mallory, stack.endpoint_id
    body = {"endpoint_name": NAME, "multi_user": False, "metadata": {}}
    assert m.call("PUT", f"/v3/endpoints/{eid}", json=body).status_code == 404
    assert m.call("POST", f"/v3/endpoints/{eid}/lock").status_code == 404
    # Her own registration gives her an account of her own, which cannot read Alice's
    # command queue even though this test hands her its name.
    mine = m.call("POST", "/v3/endpoints", json=body).json()
    assert mine["endpoint_id"] != eid
    theirs = stack.alice.call("PUT", f"/v3/endpoints/{eid}", json={
        "endpoint_name": NAME, "multi_user": True, "metadata": {}}).json()
    conn = pika.BlockingConnection(pika.URLParameters(
        mine["command_queue_info"]["connection_url"]))
    try:
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().basic_consume(theirs["command_queue_info"]["queue"],
                                         lambda *a: None)
        assert e.value.reply_code == 403
    finally:
        if conn.is_open:
            conn.close()


def test_another_users_tasks_never_run_as_the_owners(stack: Stack):
    """The endpoint registered as root (multi_user) but maps no identities: it starts user
    endpoints for its owner's identity only, refuses Mallory's start command, and her task
    fails with its reason instead of waiting forever."""
    got = run_sdk(f"""
        import json, time
        from globus_compute_sdk import Client
        def whoami():
            import os
            return os.getuid()
        c = Client()
        tid = c.run(endpoint_id="{stack.endpoint_id}", function_id=c.register_function(whoami))
        deadline = time.time() + 60
        while True:
            try:
                print(json.dumps({{"ran": c.get_result(tid)}}))
                break
            except Exception as e:
                if type(e).__name__ != "TaskPending":
                    print(json.dumps({{"error": str(e)}}))
                    break
                assert time.time() < deadline, "still pending"
                time.sleep(0.5)
    """, stack.mallory.env())
    assert "ran" not in got
    assert "untrusted identity" in got["error"]
