"""Endpoint side: a task in Globus Compute's format runs with its own serializers, in the
venv that has globus-compute-sdk (its dill pin stays out of the main suite's venv), and fails
clearly where that package is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/gc is not a package
from support_official import GC_PYTHON, require_gc_venv  # noqa: E402
from support_official import SOURCES as PATHS

SCRIPT = r"""
import json, sys
from globus_compute_sdk.serialize import ComputeSerializer, JSONData
from fnrelay import wire
from fnrelay_endpoint.worker import execute

serde = ComputeSerializer()
def add(a, b=0):
    return a + b
def boom():
    return 1 / 0
def task(fn, args, kwargs, serializers=()):
    return wire.TaskMessage(
        task_id="t", function_id="f", function=serde.pack_buffers([serde.serialize(fn)]),
        payload=serde.pack_buffers([serde.serialize(args), serde.serialize(kwargs)]),
        format=wire.FORMAT_GLOBUS, result_serializers=list(serializers))
ok = execute(task(add, (1,), {"b": 2}))
js = execute(task(add, (1,), {"b": 2}, ["globus_compute_sdk.serialize.JSONData"]))
bad = execute(task(boom, (), {}))
print(json.dumps({"ok": [ok.status, serde.deserialize(ok.result)],
                  "json": [js.status, js.result],
                  "bad": [bad.status, bad.exception.type]}))
"""


def test_globus_task_runs_with_its_serializers_and_answers_in_the_asked_one():
    require_gc_venv()
    out = subprocess.run([str(GC_PYTHON), "-c", SCRIPT], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": PATHS}, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] == ["success", 3]
    assert got["json"][0] == "success" and got["json"][1].startswith("11\n")  # JSONData's tag
    assert got["bad"] == ["failed", "builtins.ZeroDivisionError"]


def test_without_globus_compute_sdk_the_task_fails_clearly():
    from fnrelay import wire
    from fnrelay_endpoint.worker import execute

    # The suite's own venv never has it (its dill pin would change the suite's dill).
    with pytest.raises(ImportError):
        import globus_compute_sdk  # noqa: F401
    r = execute(wire.TaskMessage(task_id="t", function_id="f", function="1\nx",
                                 payload="1\na1\nb", format=wire.FORMAT_GLOBUS))
    assert r.status == "failed" and r.exception is not None
    assert "fnrelay[globus-compute]" in r.exception.message
    assert sys.modules.get("globus_compute_sdk") is None
