"""The broker's decoders of what endpoints and Executors send: `fnrelay.wire`'s, under the
database's rules.

The wire decoders check every field's type; the database refuses more (NUL, lone
surrogates, nesting beyond `validation.check_tree`'s depth) with errors that are not
ValueError, and the result consumer would then fail, reconnect and get the same message again,
forever, holding up every endpoint's results. So every decoder here applies `check_tree` to
the whole document first: anything malformed is a WireError (a ValueError), which the consumer
answers by rejecting the message. Numbers JSON has not (NaN, Infinity, 1e999: Python's json
writes and reads them, PostgreSQL's json refuses them) read as null, so a result carrying one
is kept. Nothing is unpickled: the serialized values stay opaque text.
"""

from __future__ import annotations

from fnrelay import wire
from fnrelay.wire import globus
from fnrelay_broker.validation import check_body, check_tree


def results(body: bytes) -> list[wire.ResultMessage]:
    return wire.decode_results(body, finite=True, check=check_body(body))


def direct_tasks(body: bytes) -> list[wire.TaskMessage]:
    """The tasks of a message an Executor published on the direct path (one task group's)."""
    return wire.decode_direct_tasks(body, finite=True, check=check_body(body))


def status(body: bytes) -> list[wire.StatusUpdate]:
    return wire.decode_status(body, finite=True, check=check_body(body))


def heartbeat(endpoint_id: str, body: bytes) -> wire.Heartbeat:
    """A heartbeat of `endpoint_id` (the routing key, not the body, names the sender)."""
    return wire.decode_heartbeat(body, endpoint_id, finite=True, check=check_body(body))


def child_failed(body: bytes) -> wire.ChildFailed:
    return wire.decode_child_failed(body, finite=True, check=check_body(body))


def gc_result(body: bytes) -> wire.ResultMessage:
    """An official endpoint's messagepack Result (its fields checked as the JSON ones are)."""
    r = globus.unpack_result(body)
    check_tree([r.result, r.details, r.exception.__dict__ if r.exception else None])
    return r


def gc_heartbeat(endpoint_id: str, body: bytes) -> tuple[wire.Heartbeat, str | None]:
    """An official endpoint's EPStatusReport as a heartbeat (`heartbeat_period` 0 is its last:
    it is stopping), and the error of a failure notice (a child that could not start)."""
    state = check_tree(globus.status_report(body))
    stopping = state.get("heartbeat_period") == 0 or state.get("active") is False
    error = state.get("error")
    hb = wire.Heartbeat(endpoint_id=endpoint_id,
                        info={"state": "stopping" if stopping else "online"})
    return hb, None if error is None else str(error)[:2000]
