"""The Globus Compute tutorial (tests/gc/tutorial.py), every step a test, in four variants:

- `fnrelay`: the import swapped to fnrelay, in this venv;
- `gc`: the official globus-compute-sdk, unmodified, in .venv-gc (`make gc-venv`), pointed at
  the broker with environment variables only (GLOBUS_SDK_ENVIRONMENT=local, so
  http://localhost:5000, where `fnrelay gc-proxy` forwards to the broker, and client
  credentials: GLOBUS_COMPUTE_CLIENT_ID = the user's id, _SECRET = the user's token);

each against an endpoint on the local engine and one on the batch engine (the real one-node
Slurm). The tutorial runs once per variant (a module fixture); each step is then a test.

Steps that fnrelay cannot pass yet carry `xfail(strict=True)` with what is missing (XFAIL
below): a step that starts to pass fails the suite until its mark is removed, so the marks
always say exactly what is left of issue 18.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fnrelay.devstack import services
from fnrelay.devstack.services import LocalEndpoint
from support.gc_proxy import gc_proxy, holding_gc_port
from support.session import MARKER

HERE = Path(__file__).parent
TUTORIAL = HERE / "tutorial.py"
#: The official SDK's venv (`make gc-venv`); FNRELAY_GC_VENV names another.
GC_VENV = Path(os.environ.get("FNRELAY_GC_VENV") or HERE.parents[1] / ".venv-gc")
SLURM_ENGINE = {"type": "batch", "scheduler": "slurm", "launcher": "srun", "poll_interval": 0.5}
#: Upper bound for one task (seconds), per engine: a Slurm job waits for the scheduler.
TASK_WAIT = {"local": 60, "batch": 120}
#: Upper bound for one whole tutorial run: it only keeps a broken variant from hanging.
RUN_TIMEOUT = 900


def _steps() -> list[str]:
    spec = importlib.util.spec_from_file_location("gc_tutorial", TUTORIAL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [name for name, _ in module.STEPS]


STEPS = _steps()
VARIANTS = [("fnrelay", "local"), ("fnrelay", "batch"), ("gc", "local"), ("gc", "batch")]

# --- what is missing today, per step and variant (issue 18) --------------------------------
#: Steps of the import swap that fail on every engine, and why.
SWAP_XFAIL: dict[str, str] = {}
XFAIL: dict[tuple[str, str], dict[str, str]] = {
    ("fnrelay", "local"): dict(SWAP_XFAIL),
    ("fnrelay", "batch"): dict(SWAP_XFAIL),
    ("gc", "local"): {},
    ("gc", "batch"): {},
}


def _cases() -> list[Any]:
    cases = []
    for sdk, engine in VARIANTS:
        for name in STEPS:
            reason = XFAIL[(sdk, engine)].get(name)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(sdk, engine, name, marks=marks,
                                      id=f"{sdk}-{engine}-{name}"))
    return cases


# --- the stack: a user, its endpoints, the proxy ----------------------------------------

@pytest.fixture(scope="module")
def tutorial_user(broker) -> dict[str, str]:
    token = broker.add_user("gc-tutorial")
    me = requests.get(f"{broker.url}/v1/whoami", timeout=10,
                      headers={"Authorization": f"Bearer {token}"})
    me.raise_for_status()
    return {"token": token, "user_id": me.json()["user_id"]}


def _gc_python() -> Path:
    python = GC_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"no official SDK venv at {GC_VENV}: run `make gc-venv`")
    return python


def _start_endpoint(workdir: Path, broker_url: str, token: str, sdk: str, engine: str,
                    monkeypatch: pytest.MonkeyPatch) -> LocalEndpoint:
    """An endpoint of the tutorial user. For the official SDK it runs from .venv-gc, where
    GC's serialization strategies (and its ShellFunction class) can be imported."""
    name = f"tutorial-{sdk}-{engine}"
    overrides: dict[str, Any] = {"max_workers": 4}
    if engine == "batch":
        overrides["engine"] = SLURM_ENGINE
    with monkeypatch.context() as mp:
        if sdk == "gc":
            bin_dir = _gc_python().parent
            mp.setattr(services, "executable", lambda cmd: str(bin_dir / cmd))
        ep = LocalEndpoint(workdir / name, name, broker_url, token, marker=MARKER)
        ep.configure(**overrides).start(foreground=True)
    return ep


@pytest.fixture(scope="module")
def endpoints(request, broker, tutorial_user, tmp_path_factory) -> Iterator[dict]:
    """Started on first use, one per (sdk, engine); all stopped at the end of the module."""
    started: dict[tuple[str, str], LocalEndpoint] = {}
    workdir = tmp_path_factory.mktemp("gc-tutorial")
    mp = pytest.MonkeyPatch()

    def get(sdk: str, engine: str) -> LocalEndpoint:
        if (sdk, engine) not in started:
            if engine == "batch":
                request.getfixturevalue("slurm_cluster")
            started[(sdk, engine)] = _start_endpoint(workdir, broker.url,
                                                     tutorial_user["token"], sdk, engine, mp)
        return started[(sdk, engine)]

    yield {"get": get}
    for ep in started.values():
        ep.stop()
    mp.undo()


@pytest.fixture(scope="module")
def port_5000(broker, tmp_path_factory) -> Iterator[str]:
    """`fnrelay gc-proxy` on 127.0.0.1:5000 forwarding to the session's broker, the port held
    while it runs (`holding_gc_port`: another test run waits for it)."""
    with holding_gc_port() as port:
        log = tmp_path_factory.mktemp("gc-proxy") / "proxy.log"
        with gc_proxy(broker.url, port, log):
            yield f"http://localhost:{port}"


def _run_tutorial(python: Path | str, sdk: str, endpoint_id: str, engine: str,
                  env: dict[str, str], report: Path) -> list[dict[str, Any]]:
    argv = [str(python), str(TUTORIAL), "--sdk", sdk, "--endpoint-id", endpoint_id,
            "--wait", str(TASK_WAIT[engine]), "--report", str(report)]
    started = time.monotonic()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                         stdin=subprocess.DEVNULL)
    (report.parent / "tutorial.out").write_text(out.stdout + "\n--- stderr\n" + out.stderr)
    if not report.exists():
        raise AssertionError(f"the tutorial wrote no report:\n{out.stdout}\n{out.stderr[-3000:]}")
    outcomes = json.loads(report.read_text())
    print(f"\n{sdk}/{engine}: {time.monotonic() - started:.0f}s\n{out.stdout}", file=sys.stderr)
    return outcomes


@pytest.fixture(scope="module")
def outcomes(request, broker, tutorial_user, endpoints, tmp_path_factory) -> Iterator[dict]:
    """outcomes(sdk, engine) -> {step name: outcome}, the tutorial run once per variant."""
    runs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def get(sdk: str, engine: str) -> dict[str, dict[str, Any]]:
        if (sdk, engine) in runs:
            return runs[(sdk, engine)]
        ep = endpoints["get"](sdk, engine)
        report = tmp_path_factory.mktemp(f"tutorial-{sdk}-{engine}") / "report.json"
        env = {**os.environ, "GLOBUS_COMPUTE_USER_DIR": str(report.parent / "gc-home")}
        if sdk == "fnrelay":
            env.update(FNRELAY_BROKER_URL=broker.url, FNRELAY_TOKEN=tutorial_user["token"])
            python: Path | str = sys.executable
            module = "fnrelay"
        else:
            proxy = request.getfixturevalue("port_5000")
            env.update(GLOBUS_SDK_ENVIRONMENT="local",
                       GLOBUS_SDK_SERVICE_URL_AUTH=f"{proxy}/",
                       GLOBUS_COMPUTE_CLIENT_ID=tutorial_user["user_id"],
                       GLOBUS_COMPUTE_CLIENT_SECRET=tutorial_user["token"])
            for key in ("FNRELAY_BROKER_URL", "FNRELAY_TOKEN", "PYTHONPATH"):
                env.pop(key, None)  # the official SDK knows nothing of fnrelay
            python, module = _gc_python(), "globus_compute_sdk"
        found = _run_tutorial(python, module, ep.endpoint_id, engine, env, report)
        runs[(sdk, engine)] = {o["name"]: o for o in found}
        return runs[(sdk, engine)]

    yield {"get": get}


def test_the_tutorial_has_at_least_28_steps():
    assert len(STEPS) >= 28 and len(set(STEPS)) == len(STEPS)


@pytest.mark.parametrize(("sdk", "engine", "name"), _cases())
def test_tutorial_step(outcomes, sdk: str, engine: str, name: str):
    outcome = outcomes["get"](sdk, engine).get(name)
    assert outcome is not None, f"step {name} did not run"
    assert outcome["ok"], f"step {outcome['step']} {name}: {outcome['note']}"
