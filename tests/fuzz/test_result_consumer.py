"""The broker's result consumer fed malformed messages over real AMQP: it rejects them, records
nothing, and keeps consuming (a message that crashed it would come back forever)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fnrelay import wire
from support.waiting import wait_for

_KINDS = [wire.MSG_RESULTS, wire.MSG_STATUS, wire.MSG_HEARTBEAT,
          wire.MSG_CHILD_FAILED, None, "tasks", "\u00e9"]
_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
            | st.text(st.characters(exclude_categories=()), max_size=12)
            | st.sampled_from(["success", "failed", "cancelled", "running", "\x00", "\ud800"]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
_not_text = st.integers() | st.booleans() | st.lists(_json, max_size=2) | st.dictionaries(
    st.text(max_size=4), _json, max_size=2)


def _item(task_ids: list[str]):  # type: ignore[no-untyped-def]
    """A result or status item with a real task id and at least one field of a wrong type,
    or any task id and random fields."""
    broken_real = st.fixed_dictionaries(
        {"task_id": st.sampled_from(task_ids), "result": _not_text,
         "status": st.sampled_from(["success", "failed", "cancelled", "running"]) | _json},
        optional={"exception": _json, "details": _json, "time": _json,
                  "task_group_id": _json, "detail": _json},
    )
    random_item = st.dictionaries(
        st.sampled_from(["task_id", "status", "result", "exception", "details", "time",
                         "detail", "task_group_id", "extra"]), _json, max_size=6)
    return broken_real | random_item | _json


def _body(task_ids: list[str]):  # type: ignore[no-untyped-def]
    envelope = st.fixed_dictionaries(
        {"v": _json},
        optional={"results": st.lists(_item(task_ids), max_size=3) | _json,
                  "updates": st.lists(_item(task_ids), max_size=3) | _json,
                  "child_id": _json, "error": _json, "time": _json, "info": _json},
    )
    as_json = (envelope | _json).map(lambda d: json.dumps(d).encode())
    return as_json | st.binary(max_size=64) | as_json.map(lambda b: b[: len(b) // 2])


@pytest.mark.slow
def test_malformed_messages_are_rejected_and_record_nothing(api, idle_endpoint, channel, submit,
                                                            publish_as_endpoint):
    task_id, _ = submit(idle_endpoint, "03\n\"f\"", "03\n[[],{}]")
    before = api("GET", f"/tasks/{task_id}")
    sent = []

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(_KINDS), body=_body([task_id]))
    def publish(kind, body) -> None:
        publish_as_endpoint(idle_endpoint, kind, body)
        sent.append((kind, body))

    publish()
    assert len(sent) >= 50
    # A well-formed heartbeat after them all: seeing it applied means the consumer got past
    # every message before it (one consumer, in order; a crash would redeliver the culprit
    # first, forever).
    publish_as_endpoint(idle_endpoint, wire.MSG_HEARTBEAT, wire.encode(
        wire.Heartbeat(endpoint_id=idle_endpoint, info={"state": "online"})))
    wait_for(lambda: api("GET", f"/endpoints/{idle_endpoint}/status")["status"] == "online",
             "the heartbeat sent after the malformed messages")
    queue = channel.queue_declare(wire.BROKER_RESULTS_QUEUE, passive=True)
    assert queue.method.message_count == 0
    after = api("GET", f"/tasks/{task_id}")
    assert after["result"] is None and after["exception"] is None
    assert after["pending"] and after["status"] in ("received", "waiting-for-endpoint")
    assert len(after["history"]) <= len(before["history"]) + 1  # + "delivered" at most
    assert all(h["status"] in ("received", "waiting-for-endpoint") for h in after["history"])
