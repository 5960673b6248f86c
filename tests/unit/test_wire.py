"""The wire format: states, transitions and message round trips that all three parts rely on."""

import pytest

from fnrelay import wire
from fnrelay.wire import TaskState as S


def test_terminal_states_allow_no_transition():
    for state in (S.SUCCESS, S.FAILED, S.CANCELLED):
        assert state.terminal
        assert all(not wire.can_transition(state, other) for other in S)


def test_live_states_can_reach_every_terminal_state_except_from_received():
    for state in (S.WAITING_FOR_ENDPOINT, S.WAITING_FOR_NODES, S.RUNNING):
        assert not state.terminal
        for end in (S.SUCCESS, S.FAILED, S.CANCELLED):
            assert wire.can_transition(state, end)
    # A task the broker has not yet handed to RabbitMQ cannot have produced a result.
    assert not wire.can_transition(S.RECEIVED, S.SUCCESS)
    assert not wire.can_transition(S.RECEIVED, S.RUNNING)


def test_states_accept_wire_strings():
    assert wire.can_transition("running", "success")
    assert str(S.WAITING_FOR_NODES) == "waiting-for-nodes"
    with pytest.raises(ValueError):
        wire.can_transition("running", "exploded")


def test_task_batch_round_trip():
    tasks = [
        wire.TaskMessage(
            task_id=wire.new_id(),
            function_id=wire.new_id(),
            function="01\nabc",
            payload="03\n[[1],{}]",
            resource_specification={"num_ranks": 2},
        )
        for _ in range(3)
    ]
    assert wire.decode_tasks(wire.encode_tasks(tasks)) == tasks


def test_result_batch_round_trip_keeps_exception_info():
    results = [
        wire.ResultMessage(task_id="t1", status="success", result="03\n42"),
        wire.ResultMessage(
            task_id="t2",
            status="failed",
            exception=wire.ExceptionInfo("builtins.ValueError", "bad", "Traceback ..."),
            details={"python_version": "3.11.7"},
        ),
    ]
    decoded = wire.decode_results(wire.encode_results(results))
    assert decoded == results
    assert decoded[1].exception.type == "builtins.ValueError"


def test_status_round_trip_and_malformed_body():
    updates = [wire.StatusUpdate(task_id="t1", status="running", detail="worker 3")]
    assert wire.decode_status(wire.encode_status(updates)) == updates
    with pytest.raises(ValueError, match="malformed"):
        wire.decode(b"\xff{not json")


def test_queue_names_are_derived_under_the_brokers_key_and_do_not_embed_ids():
    from fnrelay_broker.queues import QueueNames

    eid, gid = "0b6f3c7e-4a8d-4f0e-9d7a-1c2b3d4e5f60", "7d1e2f3a-5b6c-4d7e-8f90-a1b2c3d4e5f6"
    names, other = QueueNames(b"k" * 32), QueueNames(b"j" * 32)
    queue = names.endpoint(eid)
    assert queue == names.endpoint(eid)  # the same at every registration
    assert queue.startswith("fnrelay.endpoint.") and queue.endswith(".tasks")
    assert names.control(eid).endswith(".control") and names.group(gid).startswith("fnrelay.group.")
    assert eid not in queue + names.control(eid) and gid not in names.group(gid)
    assert queue != other.endpoint(eid)  # only the key's holder can compute them
    assert len({names.endpoint(eid), names.control(eid), names.group(eid)}) == 3


def test_group_routing_keys_name_the_sending_endpoint():
    assert wire.group_routing_key("g1") == "g1"  # the broker's
    assert wire.group_routing_key("g1", "e1") == "e1.g1"  # a granted endpoint's


def test_fields_from_newer_peers_are_ignored():
    """The protocol can grow: a message with keys this version does not know still decodes."""
    tasks = wire.decode_tasks(wire.encode({"v": 1, "tasks": [{
        "task_id": "t", "function_id": "f", "function": "fn", "payload": "p",
        "max_retries": 2, "priority": 9}]}))
    assert tasks[0].max_retries == 2 and not hasattr(tasks[0], "priority")
    results = wire.decode_results(wire.encode({"v": 1, "results": [{
        "task_id": "t", "status": "failed", "blob_url": "x",
        "exception": {"type": "E", "message": "m", "traceback": "", "notes": []}}]}))
    assert results[0].exception.message == "m"
    updates = wire.decode_status(wire.encode({"v": 1, "updates": [{
        "task_id": "t", "status": "running", "node": "n1"}]}))
    assert updates[0].status == "running"


def test_task_max_retries_round_trips_and_defaults_to_none():
    msg = wire.TaskMessage(task_id="t", function_id="f", function="fn", payload="p",
                               max_retries=0)
    assert wire.decode_tasks(wire.encode_tasks([msg]))[0].max_retries == 0
    plain = wire.TaskMessage(task_id="t", function_id="f", function="fn", payload="p")
    assert wire.decode_tasks(wire.encode_tasks([plain]))[0].max_retries is None


def test_task_ids_are_version_7_uuids_in_creation_order() -> None:
    """Task ids key B-tree indexes (broker database, endpoint journal): ids made later sort
    later, so new rows land on the same pages; the rest is random, and the form canonical."""
    import time
    import uuid

    ids = []
    for _ in range(5):
        ids.append(wire.new_task_id())
        time.sleep(0.002)  # a new millisecond
    assert ids == sorted(ids) and len(set(ids)) == 5
    for i in ids:
        u = uuid.UUID(i)
        assert (str(u), u.version, u.variant) == (i, 7, uuid.RFC_4122)
        assert abs((u.int >> 80) / 1000 - time.time()) < 60  # its first 48 bits: the time
    same_ms = {wire.new_task_id() for _ in range(1000)}
    assert len(same_ms) == 1000


def test_a_body_nested_beyond_the_json_parsers_recursion_is_malformed() -> None:
    """json raises RecursionError (not a ValueError) for such a body: a consumer that drops
    malformed messages by ValueError would otherwise fail on it, reconnect, and get it again."""
    with pytest.raises(ValueError, match="nested too deeply"):
        wire.decode(b"[" * 100_000)
