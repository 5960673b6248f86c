"""hypothesis against the deserialization entry points: malformed input raises the errors their
callers catch, never anything that would kill a consumer thread."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fnrelay import serialize, wire
from fnrelay.errors import SerializationError

#: What every consumer of decoded messages catches (broker, endpoint agent, manager, Executor).
CAUGHT = (ValueError, KeyError, TypeError)

_settings = settings(max_examples=150, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=10,
)
_fields = ["task_id", "function_id", "function", "payload", "status", "result", "exception",
           "details", "time", "detail", "task_group_id", "attempt", "type", "message",
           "traceback"]
_item = st.dictionaries(st.sampled_from(_fields), _json, max_size=6) | _json
_bodies = st.one_of(
    st.binary(max_size=80),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"v": _json}, optional={
        "tasks": st.lists(_item, max_size=3) | _json,
        "results": st.lists(_item, max_size=3) | _json,
        "updates": st.lists(_item, max_size=3) | _json,
    }).map(lambda v: json.dumps(v).encode()),
)


@_settings
@given(body=_bodies)
def test_decode_raises_only_value_error(body):
    try:
        wire.decode(body)
    except ValueError:
        pass


@pytest.mark.parametrize("decoder", [wire.decode_tasks, wire.decode_status])
@_settings
@given(body=_bodies)
def test_message_decoders_raise_only_what_consumers_catch(decoder, body):
    try:
        decoder(body)
    except CAUGHT:
        pass


@pytest.mark.parametrize("decoder", [
    wire.decode_tasks, wire.decode_direct_tasks, wire.decode_results, wire.decode_status,
    wire.decode_cancel, wire.decode_start_child, wire.decode_child_failed,
    lambda b: wire.decode_heartbeat(b, "ep"), wire.decode_task, wire.decode_result])
@_settings
@given(body=_bodies)
def test_every_wire_decoder_raises_only_wire_error(decoder, body):
    """One error type: a consumer refuses a malformed message by catching WireError alone."""
    try:
        decoder(body)
    except wire.WireError:
        pass


@_settings
@given(body=_bodies)
def test_result_decoder_raises_only_known_errors(body):
    try:
        wire.decode_results(body)
    except CAUGHT:
        pass


@pytest.mark.parametrize("body", [b'{"v":1,"results":["x"]}', b'{"v":1,"results":"ab"}'])
def test_result_decoder_raises_only_what_the_executor_catches(body):
    with pytest.raises(CAUGHT):
        wire.decode_results(body)


@_settings
@given(body=_bodies)
def test_broker_inbound_checks_raise_only_value_error(body):
    """The broker's checked decoders (what its result consumer uses) turn anything malformed
    into ValueError, which it answers by rejecting the message."""
    from fnrelay_broker import inbound

    for decode in (inbound.results, inbound.status, inbound.child_failed, inbound.direct_tasks,
                   lambda b: inbound.heartbeat("ep", b)):
        try:
            decode(body)
        except ValueError:
            pass



def _verdict(check, doc):
    try:
        check(doc)
        return None
    except ValueError as e:
        return str(e)


_texts = st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "\ue000", "\\",
                                           "u", "\u00e9"]), max_size=6)
_tree = st.recursive(st.none() | st.floats() | _texts,
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_texts, inner, max_size=3), max_leaves=8)


@_settings
@given(doc=_tree, ascii_only=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-16"]))
def test_the_body_check_agrees_with_the_full_check(doc, ascii_only, encoding):
    """`check_body` skips the strings of a body whose raw text cannot hold a NUL or a lone
    surrogate: whatever the text, escaped or raw, it refuses what `check_tree` refuses."""
    from fnrelay_broker.validation import check_body, check_tree

    text = json.dumps({"v": doc}, ensure_ascii=ascii_only)
    try:
        body = text.encode(encoding, "surrogatepass")
    except UnicodeEncodeError:
        return
    decoded = json.loads(body)  # as the codec decodes it
    assert _verdict(check_body(body), decoded) == _verdict(check_tree, decoded)


@pytest.mark.parametrize("body", [
    b'{"v":1,"updates":[{"task_id":"t","status":"running","detail":"a\\u0000b"}]}',
    b'{"v":1,"updates":[{"task_id":"t","status":"running","detail":"\\uD800"}]}',
    b'{"v":1,"updates":[{"task_id":"t","status":"running","detail":"\xed\xa0\x80"}]}',
    '{"v":1,"updates":[{"task_id":"t","status":"running","detail":"\\u0000"}]}'
    .encode("utf-16"),
    b'{"v":1,"updates":[{"task_id":"t","status":"running","detail":"x"}],"deep":'
    + b"[" * 70 + b"]" * 70 + b"}",
])
def test_the_broker_refuses_bad_text_and_depth_however_written(body):
    from fnrelay_broker import inbound

    with pytest.raises(wire.WireError):
        inbound.status(body)

_tags = st.sampled_from([serialize.TAG_DILL_CODE, serialize.TAG_DILL_DATA, serialize.TAG_JSON,
                         serialize.TAG_SOURCE]) | st.text(max_size=4)
_data = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
)


@_settings
@given(tag=_tags, data=_data)
def test_deserialize_raises_only_serialization_error(tag, data):
    try:
        serialize.deserialize(f"{tag}\n{data}")
    except SerializationError:
        pass


@_settings
@given(value=_json)
def test_json_values_round_trip(value):
    """The header-tagged format keeps plain data exactly (JSON, or dill for floats/tuples)."""
    out = serialize.deserialize(serialize.serialize(value))
    assert json.dumps(out, sort_keys=True) == json.dumps(value, sort_keys=True)
