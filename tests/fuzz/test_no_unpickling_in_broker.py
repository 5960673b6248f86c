"""Unpickling happens only on the endpoint's workers and in the user's own SDK, never in the
broker: serialized functions, arguments and results pass through it as opaque text.

Statically: no broker module imports a pickle-family module or the deserializing helpers.
Behaviourally: a dill pickle that creates a marker file when loaded goes through the broker
as a function, a task payload and a result, and the file never appears.
"""

from __future__ import annotations

import ast
import base64
import json
import uuid
from pathlib import Path

import dill

import fnrelay_broker
from fnrelay import serialize, wire
from support.waiting import wait_for

BROKER_SOURCES = sorted(Path(fnrelay_broker.__file__).parent.rglob("*.py"))
UNPICKLERS = {"pickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
DESERIALIZERS = {"deserialize", "deserialize_args", "loads", "load", "Unpickler"}


def _offences(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNPICKLERS
                      or a.name == "fnrelay.serialize"]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[0] in UNPICKLERS or mod == "fnrelay.serialize":
                found.append(mod)
            if mod == "fnrelay":
                found += [a.name for a in node.names if a.name == "serialize"]
        elif isinstance(node, ast.Attribute) and node.attr in DESERIALIZERS:
            base = node.value
            if isinstance(base, ast.Name) and base.id in UNPICKLERS | {"serialize"}:
                found.append(f"{base.id}.{node.attr}")
    return [f"{path.name}:{what}" for what in found]


def test_no_broker_module_can_unpickle():
    assert len(BROKER_SOURCES) >= 10
    offences = [o for path in BROKER_SOURCES for o in _offences(path)]
    assert offences == []


def test_the_static_check_catches_an_unpickler(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import dill\nfrom fnrelay import serialize\nx = serialize.deserialize('')\n")
    assert _offences(bad) == ["bad.py:dill", "bad.py:serialize", "bad.py:serialize.deserialize"]


class _Tripwire:
    """Unpickling this calls open(marker, "w"): the file exists iff someone unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _tripwire(marker: Path) -> str:
    """A header-tagged dill value (as serialize() makes them) holding the tripwire."""
    return f"{serialize.TAG_DILL_DATA}\n{base64.b64encode(dill.dumps(_Tripwire(marker))).decode()}"


def test_tripwire_fires_when_unpickled(tmp_path):
    marker = tmp_path / "fired"
    serialize.deserialize(_tripwire(marker)).close()
    assert marker.exists()


def test_broker_passes_pickles_through_without_loading_them(
    tmp_path, api, registration, idle_endpoint, submit, publish_as_endpoint, channel
):
    markers = {kind: tmp_path / f"{kind}-{uuid.uuid4().hex}" for kind in
               ("function", "payload", "result", "exception")}
    function, payload = _tripwire(markers["function"]), _tripwire(markers["payload"])
    task_id, group_id = submit(idle_endpoint, function, payload)

    # The endpoint's queue gets the very same text (the broker never looked inside).
    queue = registration["task_queue"]
    _method, _props, body = wait_for(lambda: _get(channel, queue), "the task message")
    tasks = wire.decode_tasks(body)
    assert [(t.task_id, t.function, t.payload) for t in tasks] == [(task_id, function, payload)]

    # A fake endpoint reports a result and a remote exception that are tripwires too.
    result = wire.ResultMessage(
        task_id=task_id, status="success", result=_tripwire(markers["result"]),
        exception=None, task_group_id=group_id)
    publish_as_endpoint(idle_endpoint, wire.MSG_RESULTS, wire.encode_results([result]))
    record = wait_for(lambda: (r := api("GET", f"/tasks/{task_id}"))["status"] == "success"
                      and r, "the result to be recorded")
    assert record["result"] == result.result
    other, _ = submit(idle_endpoint, function, payload)
    failure = wire.ResultMessage(
        task_id=other, status="failed", task_group_id=group_id,
        exception=wire.ExceptionInfo(type="x.Y", message="m", traceback="",
                                         serialized=_tripwire(markers["exception"])))
    publish_as_endpoint(idle_endpoint, wire.MSG_RESULTS, wire.encode_results([failure]))
    record = wait_for(lambda: (r := api("GET", f"/tasks/{other}"))["status"] == "failed" and r,
                      "the failure to be recorded")
    assert record["exception"]["serialized"] == failure.exception.serialized

    assert [k for k, m in markers.items() if m.exists()] == []
    # ...and the user's own SDK is where it is loaded.
    serialize.deserialize(json.loads(json.dumps(record))["exception"]["serialized"]).close()
    assert markers["exception"].exists()


def _get(ch, queue: str):  # type: ignore[no-untyped-def]
    method, props, body = ch.basic_get(queue, auto_ack=True)
    return (method, props, body) if method is not None else None
