"""Functions cross Python versions: SDKs on CPython 3.10, 3.12 and 3.13 (pyenv's, in cached
venvs: tests/support/pyenvs.py) submit to the session's endpoint on 3.11 through the whole
stack (broker, RabbitMQ, endpoint, worker, results back): plain functions, closures,
lambdas, decorated functions, bound methods, ``__main__`` classes and recursion, a notebook
cell, a remote exception; and a function without source fails with PythonVersionMismatch,
at once and not retried. One script per interpreter runs every case
(tests/support/crossversion_cases.py); the three run at once."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support import pyenvs

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "crossversion_cases.py"


def _run(python: Path, version: str, broker_url: str, token: str, endpoint_id: str
         ) -> dict[str, Any]:
    env = {**os.environ, "FNRELAY_BROKER_URL": broker_url, "FNRELAY_TOKEN": token,
           "PYTHONPATH": pyenvs.sdk_pythonpath()}
    env.pop("FNRELAY_ENDPOINT_ID", None)
    args = [str(python), str(SCRIPT), endpoint_id]
    if version == pyenvs.NOTEBOOK:
        args.append("--notebook")
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400,
                         cwd="/")
    assert out.returncode == 0, f"{version}: {out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def outcomes(broker_url: str, alice_token: str, endpoint_id: str) -> dict[str, dict]:
    versions = sorted(pyenvs.VERSIONS)
    pythons = pyenvs.sdk_envs(versions)
    with cf.ThreadPoolExecutor(len(versions)) as pool:
        runs = {v: pool.submit(_run, pythons[v], v, broker_url, alice_token, endpoint_id)
                for v in versions}
        return {v: r.result() for v, r in runs.items()}


VALUES = {
    "where": "'3.11'", "plain": "14", "closure": "6", "lambda": "21",
    "decorated": "('shouted', 2)", "bound_method": "7", "recursion": "120",
    "client_run": "42", "same_class": "(True, 8)",
}


@pytest.mark.parametrize("version", sorted(pyenvs.VERSIONS))
def test_every_kind_of_function_crosses_to_3_11(outcomes, version: str) -> None:
    got = outcomes[version]
    assert got["python"] == version
    for case, value in VALUES.items():
        assert got[case] == {"value": value}, (version, case, got[case])
    assert got["main_class"]["value"].startswith("<__main__.Point object")


@pytest.mark.parametrize("version", sorted(pyenvs.VERSIONS))
def test_a_remote_exception_comes_back_as_itself(outcomes, version: str) -> None:
    got = outcomes[version]["remote_exception"]
    assert got["error"] == "Refused" and "Refused: no way" in got["message"]
    assert "TaskExecutionFailed" in got["bases"]


@pytest.mark.parametrize("version", sorted(pyenvs.VERSIONS))
def test_a_function_without_source_fails_naming_both_versions(outcomes, version) -> None:  # type: ignore[no-untyped-def]
    got = outcomes[version]["no_source"]
    assert got["error"] == "PythonVersionMismatch", got
    assert {"TaskExecutionFailed", "SerializationError"} <= set(got["bases"])
    assert f"Python {version} bytecode" in got["message"]
    assert "worker runs Python 3.11" in got["message"]
    assert "module the endpoint can import" in got["message"]


def test_a_notebook_cell_function_crosses(outcomes) -> None:  # type: ignore[no-untyped-def]
    assert outcomes[pyenvs.NOTEBOOK]["notebook"] == {"value": "42"}


@pytest.mark.parametrize("version", sorted(pyenvs.VERSIONS))
def test_the_sdk_warned_once_naming_both_versions(outcomes, version: str) -> None:
    [warning] = outcomes[version]["warnings"]
    assert f"runs Python 3.11 and this SDK runs Python {version}" in warning


def _double(x):  # type: ignore[no-untyped-def]
    return 2 * x


def test_the_client_reads_the_endpoints_versions_once_and_warns_once(
        client, endpoint_id, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import warnings

    from fnrelay.errors import PythonVersionWarning
    from fnrelay.wire import pyversion

    monkeypatch.setattr(pyversion, "here", lambda: "3.99")  # an SDK on a version none runs
    asked: list[str] = []
    status = client.get_endpoint_status
    monkeypatch.setattr(client, "get_endpoint_status", lambda e: asked.append(e) or status(e))
    function_id = client.register_function(_double)
    with pytest.warns(PythonVersionWarning, match=r"runs Python 3\.11 and this SDK runs "
                                                  r"Python 3\.99"):
        client.run(1, endpoint_id=endpoint_id, function_id=function_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.run(2, endpoint_id=endpoint_id, function_id=function_id)
    assert asked == [endpoint_id]
