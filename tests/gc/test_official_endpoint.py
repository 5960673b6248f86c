"""The official, unmodified globus-compute-endpoint 4.x (from .venv-gc) joins a real fnrelay
broker on port 5000: it registers through /v3/endpoints with a fnrelay user's client id and
secret, reads online through the official SDK, starts a user endpoint when the broker sends
its `cmd_start_endpoint`, and runs the official SDK's tasks (issue 19, item 4)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
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
import yaml
from pika.exceptions import ChannelClosedByBroker

from fnrelay.devstack.processes import spawn, stop_pid
from fnrelay.devstack.rabbitmq import make_shared_tmpdir
from fnrelay.devstack.services import BrokerServer
from support.session import MARKER

sys.path.insert(0, str(Path(__file__).parent))
from support_official import (  # noqa: E402
    PORT,
    SOURCES,
    Party,
    add_party,
    gc_venv,  # noqa: F401 - the fixture pytestmark names
    gc_wheelhouse,
    give_uv,
    needs_gc_venv,
    port_5000,  # noqa: F401 - the fixture
    run_sdk,
    shared_gc_venv,
)

pytestmark = [needs_gc_venv, pytest.mark.timeout(300)]

NAME = "gcep"


@dataclass
class Endpoint:
    endpoint_id: str
    proc: subprocess.Popen
    log: Path


@dataclass
class Stack:
    broker: BrokerServer
    alice: Party
    mallory: Party
    #: Alice's endpoint, run by root, mapping her identity to the local account `mapped`.
    endpoint_id: str
    mapped: str
    shared: Path
    bindir: Path
    proc: subprocess.Popen

    @property
    def python(self) -> Path:
        """The submitters' Python: the machine's (the shared venv's), which GC's default
        template, matching the submitter's version, finds for the mapped accounts too."""
        return self.bindir / "python3"


def endpoint_env(owner: Party, gc_dir: Path, bindir: Path) -> dict[str, str]:
    """The official endpoint's environment: local services, the owner's client id and secret,
    its configuration directory, and the venv's commands first."""
    env = owner.env()
    env["GLOBUS_COMPUTE_USER_DIR"] = str(gc_dir)
    env["PATH"] = f"{bindir}:/usr/bin:/bin"
    return env


def configure(argv: list[str], env: dict[str, str], gc_dir: Path, options: list[str],
              **changes: str) -> Path:
    """`globus-compute-endpoint configure` as GC documents it (as root: --contact-email),
    then the site's `changes` to config.yaml and a 5 s heartbeat."""
    out = subprocess.run([*argv, "configure", NAME, *options], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ep_dir = gc_dir / NAME
    config = yaml.safe_load((ep_dir / "config.yaml").read_text())
    config["heartbeat_period"] = 5
    config.update(changes)
    (ep_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return ep_dir


def start(argv: list[str], env: dict[str, str], ep_dir: Path, party: Party,
          timeout: float = 60) -> Endpoint:
    """`globus-compute-endpoint start NAME`; its id once the broker reads it online."""
    log = ep_dir.parent / "console.log"
    proc = spawn([*argv, "start", NAME], log, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the endpoint exited:\n{log.read_text()[-4000:]}"
        eid_file = ep_dir / "endpoint.json"
        if eid_file.exists():
            eid = json.loads(eid_file.read_text())["endpoint_id"]
            r = party.call("GET", f"/v2/endpoints/{eid}/status")
            if r.status_code == 200 and r.json()["status"] == "online":
                return Endpoint(eid, proc, log)
        time.sleep(0.5)
    stop_pid(proc.pid, group=True)
    raise AssertionError(f"the endpoint is not online:\n{log.read_text()[-4000:]}")


def kill_account_processes(uid: int) -> None:
    """SIGKILL what the throwaway account `uid` still runs (user endpoints and workers run
    in sessions of their own)."""
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                os.kill(int(pid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def accounts() -> Iterator[dict[str, str]]:
    """Two fresh local accounts: "mapped" (Alice's identity maps to it on the root endpoint)
    and "owner" (runs an unprivileged endpoint)."""
    if os.geteuid() != 0:
        pytest.skip("creates local accounts and runs the endpoint as them: needs root")
    tag = uuid.uuid4().hex[:6]
    names = {"mapped": f"gcmap-{tag}", "owner": f"gcown-{tag}"}
    for name in names.values():
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    yield names
    for name in names.values():
        kill_account_processes(pwd.getpwnam(name).pw_uid)
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


@pytest.fixture(scope="module")
def stack(port_5000: int, rabbitmq, new_vhost, _workdir: Path,  # noqa: F811 - the fixture
          accounts: dict[str, str]) -> Iterator[Stack]:
    """A broker on port 5000 and Alice's official endpoint run by root (multi-user), from a
    copy of .venv-gc its user endpoints (run as the mapped account) can run too."""
    d = _workdir / f"gc-endpoint-{uuid.uuid4().hex[:6]}"
    shared = make_shared_tmpdir("fnrelay-gc-ep-")
    broker = BrokerServer(d / "broker", new_vhost("gc-endpoint"), port=PORT, marker=MARKER,
                          management_url=rabbitmq.management_url,
                          extra_args=["--heartbeat-threshold", "20"])
    broker.start()
    ep = None
    try:
        bindir = shared_gc_venv(shared / "venv")
        wheelhouse = shared / "wheelhouse"  # where the accounts can read it
        shutil.copytree(gc_wheelhouse(), wheelhouse)
        for account in accounts.values():
            give_uv(account, wheelhouse)
        alice, mallory = add_party(broker, "alice", d), add_party(broker, "mallory", d)
        gc_dir = d / "gc-home"
        env = endpoint_env(alice, gc_dir, bindir)
        argv = [str(bindir / "globus-compute-endpoint")]
        mapping = gc_dir / "identity_mapping.json"
        ep_dir = configure(argv, env, gc_dir, ["--contact-email", "ops@example.org"],
                           identity_mapping_config_path=str(mapping))
        # GC's own format (expression_identity_mapping#1.0.0); `{username}` is the fnrelay
        # user name.
        mapping.write_text(json.dumps([{
            "DATA_TYPE": "expression_identity_mapping#1.0.0",
            "mappings": [{"source": "{username}", "match": "alice",
                          "output": accounts["mapped"]}]}]))
        ep = start(argv, env, ep_dir, alice)
        yield Stack(broker, alice, mallory, ep.endpoint_id, accounts["mapped"], shared, bindir,
                    ep.proc)
    finally:
        if ep is not None:
            stop_pid(ep.proc.pid, timeout=20, group=True)
        broker.stop()
        shutil.rmtree(shared, ignore_errors=True)


def test_registers_and_reads_online_through_the_official_sdk(stack: Stack):
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        c = Client()
        print(json.dumps({{"status": c.get_endpoint_status("{stack.endpoint_id}")["status"],
                          "mine": [e["uuid"] for e in c.get_endpoints()]}}))
    """, stack.alice.env(), python=stack.python)
    assert got["status"] == "online"
    assert stack.endpoint_id in got["mine"]


def test_official_sdk_tasks_run_on_the_official_endpoint(stack: Stack):
    """GC's default template as `configure` wrote it (GlobusComputeEngine, LocalProvider);
    the user endpoint runs as the account Alice's identity maps to. The template's
    worker_init builds a venv matched to her SDK's `user_runtime` (Python and
    globus-compute-sdk versions) with the account's uv and site index (give_uv: no internet),
    and her tasks run in it."""
    got = run_sdk(f"""
        import json, platform
        from importlib.metadata import version
        from globus_compute_sdk import Executor
        def square(x):
            return x * x
        def boom():
            return 1 / 0
        def account():
            import getpass
            return getpass.getuser()
        def where():
            import sys
            from importlib.metadata import version
            return [sys.prefix, version("globus-compute-endpoint")]
        with Executor(endpoint_id="{stack.endpoint_id}") as ex:
            futs = [ex.submit(square, i) for i in range(4)]
            values = [f.result(timeout=90) for f in futs]
            who = ex.submit(account).result(timeout=60)
            prefix, gce = ex.submit(where).result(timeout=60)
            try:
                ex.submit(boom).result(timeout=60)
                err = None
            except Exception as e:
                err = f"{{type(e).__name__}}: {{e}}"
        print(json.dumps({{"values": values, "err": err, "who": who, "prefix": prefix,
                          "gce": gce, "python": platform.python_version(),
                          "sdk": version("globus-compute-sdk")}}))
    """, stack.alice.env(), python=stack.python)
    assert got["values"] == [0, 1, 4, 9]
    assert got["who"] == stack.mapped
    assert "ZeroDivisionError" in got["err"]
    home = pwd.getpwnam(stack.mapped).pw_dir
    venv = f"{home}/.globus_compute/venvs/py{got['python']}-sdk{got['sdk']}"
    assert got["prefix"] == venv
    assert got["gce"] == got["sdk"]


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
    """The endpoint registered as root (multi_user): Mallory may submit, but her identity
    maps to no local account, so the endpoint refuses her start command, and her task fails
    with its reason instead of waiting forever (or running as Alice's account)."""
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        def whoami():
            import os
            return os.getuid()
        c = Client()
        tid = c.run(endpoint_id="{stack.endpoint_id}", function_id=c.register_function(whoami))
        try:
            print(json.dumps({{"ran": result_of(c, tid)}}))
        except Exception as e:  # TaskPending too, after 60 s
            print(json.dumps({{"error": f"{{type(e).__name__}}: {{e}}"}}))
    """, stack.mallory.env(), python=stack.python)
    assert "ran" not in got
    assert "failed to map to a local user" in got["error"]


def test_an_unprivileged_endpoint_runs_its_owners_tasks_as_its_own_account(
        stack: Stack, accounts: dict[str, str]):
    """The endpoint run by an ordinary account (`runuser`), configured without
    --contact-email: it registers as not multi-user, runs its owner's tasks as itself, and
    nobody else may submit to it."""
    owner = accounts["owner"]
    uid = pwd.getpwnam(owner).pw_uid
    base = stack.shared / "uma"
    base.mkdir()
    uma = add_party(stack.broker, "uma", base)
    gc_dir = base / "gc-home"
    env = {**endpoint_env(uma, gc_dir, stack.bindir), "HOME": pwd.getpwnam(owner).pw_dir}
    runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"
    argv = [runuser, "-m", "-u", owner, "--", str(stack.bindir / "globus-compute-endpoint")]
    subprocess.run(["chown", "-R", owner, str(base)], check=True)
    ep_dir = configure(argv, env, gc_dir, [])
    ep = start(argv, env, ep_dir, uma)
    try:
        got = run_sdk(f"""
            import json, os
            from globus_compute_sdk import Executor
            def where():
                import os
                return os.getuid()
            with Executor(endpoint_id="{ep.endpoint_id}") as ex:
                print(json.dumps({{"uid": ex.submit(where).result(timeout=90)}}))
        """, uma.env(), python=stack.python)
        assert got["uid"] == uid
        # Her own function (the packed buffers are opaque to the broker), his endpoint.
        fid = stack.mallory.call("POST", "/v2/functions", json={
            "function_name": "f", "function_code": "1\nx"}).json()["function_uuid"]
        r = stack.mallory.call("POST", f"/v3/endpoints/{ep.endpoint_id}/submit", json={
            "tasks": {fid: ["1\na1\nb"]}})
        assert r.status_code == 404, r.text
    finally:
        stop_pid(ep.proc.pid, timeout=20, group=True)
        kill_account_processes(uid)


def test_fnrelay_sdk_tasks_in_globus_computes_format_run_on_it(stack: Stack):
    """fnrelay's Client with format="globus-compute" (in the venv that has
    globus-compute-sdk): its tasks run on the official endpoint; in fnrelay's own format
    they are refused at submit (that endpoint runs nothing else)."""
    env = {**stack.alice.env(), "PYTHONPATH": SOURCES,
           "FNRELAY_BROKER_URL": f"http://127.0.0.1:{PORT}", "FNRELAY_TOKEN": stack.alice.token}
    got = run_sdk(f"""
        import json
        from fnrelay import Client
        from fnrelay.errors import BrokerError
        def cube(x):
            return x ** 3
        c = Client(format="globus-compute")
        tid = c.run(3, endpoint_id="{stack.endpoint_id}", function_id=c.register_function(cube))
        batch = c.create_batch()
        for i in range(3):
            batch.add(c.register_function(cube), (i,))
        ids = c.batch_run("{stack.endpoint_id}", batch)["task_ids"]
        value = result_of(c, tid, 90)
        rest = [result_of(c, i, 90) for i in ids]
        plain = Client()
        try:
            plain.run(2, endpoint_id="{stack.endpoint_id}",
                      function_id=plain.register_function(cube))
            refused = None
        except BrokerError as e:
            refused = str(e)
        steps = [h["status"] for h in c.task_record(tid)["history"]]
        print(json.dumps({{"value": value, "rest": rest, "refused": refused, "steps": steps}}))
    """, env, python=stack.python)
    assert "running" in got["steps"]  # when the worker started it, from GC's Result
    assert got["value"] == 27
    assert got["rest"] == [0, 1, 8]
    assert "Globus Compute's format only" in got["refused"]


def test_stop_endpoint_locks_it_out_and_it_exits(stack: Stack):
    """The official SDK's stop_endpoint (GC's lock): the broker closes the endpoint's
    connections and refuses its registration, and the official endpoint exits. Last in this
    module: it stops the module's endpoint."""
    got = run_sdk(f"""
        import json
        from globus_compute_sdk import Client
        r = Client().stop_endpoint("{stack.endpoint_id}")
        print(json.dumps(getattr(r, "data", r)))
    """, stack.alice.env(), python=stack.python)
    assert got["endpoint_id"] == stack.endpoint_id and got["lock_expiration_timestamp"]
    stack.proc.wait(timeout=60)
    r = stack.alice.call("PUT", f"/v3/endpoints/{stack.endpoint_id}",
                         json={"endpoint_name": NAME})
    assert r.status_code == 409
