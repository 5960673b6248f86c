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


# --- the typed decoders ------------------------------------------------------------------------
_TASK = {"task_id": "t", "function_id": "f", "function": "01\nfn", "payload": "03\n[[],{}]"}
_RESULT = {"task_id": "t", "status": "success", "result": "03\n1"}


def _tasks(**fields: object) -> bytes:
    return wire.encode({"v": 1, "tasks": [{**_TASK, **fields}]})


def _results(**fields: object) -> bytes:
    return wire.encode({"v": 1, "results": [{**_RESULT, **fields}]})


def _updates(**fields: object) -> bytes:
    return wire.encode({"v": 1, "updates": [{"task_id": "t", "status": "running", **fields}]})


@pytest.mark.parametrize("decode, body", [
    (wire.decode_tasks, _tasks(task_id=7)),
    (wire.decode_tasks, _tasks(payload=None)),
    (wire.decode_tasks, _tasks(resource_specification=["walltime", 5])),
    (wire.decode_tasks, _tasks(user_endpoint_config="x")),
    (wire.decode_tasks, _tasks(max_retries="3")),
    (wire.decode_tasks, _tasks(max_retries=True)),
    (wire.decode_tasks, _tasks(max_retries=-1)),
    (wire.decode_tasks, _tasks(attempt=1.5)),
    (wire.decode_tasks, _tasks(direct="yes")),
    (wire.decode_tasks, _tasks(task_group_id=["g"])),
    (wire.decode_tasks, b'{"v":1,"tasks":{}}'),
    (wire.decode_tasks, b'{"v":1,"tasks":["x"]}'),
    (wire.decode_tasks, b"[1]"),
    (wire.decode_results, _results(status=3)),
    (wire.decode_results, _results(result=5)),
    (wire.decode_results, _results(details=[])),
    (wire.decode_results, _results(exception="boom")),
    (wire.decode_results, _results(exception={"type": "E", "message": "m"})),
    (wire.decode_results, _results(exception={"type": "E", "message": "m", "traceback": "",
                                              "serialized": 1})),
    (wire.decode_results, _results(record="x")),
    (wire.decode_status, _updates(time="now")),
    (wire.decode_status, _updates(time=False)),
    (wire.decode_status, _updates(detail=1)),
    (wire.decode_status, _updates(status=None)),
    (lambda b: wire.decode_heartbeat(b, "ep"), b'{"time":"x"}'),
    (lambda b: wire.decode_heartbeat(b, "ep"), b'{"time":1e999}'),
    (lambda b: wire.decode_heartbeat(b, "ep"), b'{"info":[]}'),
    (wire.decode_cancel, b'{"v":1}'),
    (wire.decode_cancel, b'{"v":1,"task_ids":["a",2]}'),
    (wire.decode_start_child, b'{"v":1,"child_id":"c","user_id":1,"username":"u"}'),
    (wire.decode_start_child, b'{"v":1,"child_id":"c","user_id":"u","username":"u",'
                              b'"user_endpoint_config":[]}'),
    (wire.decode_child_failed, b'{"v":1,"child_id":"c"}'),
    (wire.decode_task, b'{"task_id":"t"}'),
    (wire.decode_result, b'"x"'),
])
def test_every_decoder_refuses_a_field_of_the_wrong_type_with_wire_error(decode, body):
    with pytest.raises(wire.WireError):
        decode(body)


def test_wire_error_is_what_consumers_already_catch():
    assert issubclass(wire.WireError, ValueError)
    with pytest.raises(wire.WireError, match="'status' must be str, not int"):
        wire.decode_results(_results(status=3))


def test_null_reads_as_an_absent_field():
    task = wire.decode_tasks(_tasks(resource_specification=None, user_endpoint_config=None,
                                    attempt=None, direct=None, task_group_id=None))[0]
    assert task == wire.TaskMessage(**_TASK)
    result = wire.decode_results(_results(details=None, exception=None, record=None))[0]
    assert result == wire.ResultMessage(**_RESULT)
    update = wire.decode_status(_updates(time=None, detail=None))[0]
    assert update.detail == "" and abs(update.time - wire.now()) < 60


def test_what_the_senders_send_decodes_to_what_they_sent():
    assert wire.decode_cancel(wire.encode_cancel(["a", "b"])) == ["a", "b"]
    start = wire.StartChild("c", "u", "alice", {"account": "x"})
    assert wire.decode_start_child(wire.encode_start_child(start)) == start
    failed = wire.ChildFailed("c", "identity refused")
    assert wire.decode_child_failed(wire.encode_child_failed(failed)) == failed
    beat = wire.Heartbeat("ignored", time=12.5, info={"state": "online"})
    assert wire.decode_heartbeat(wire.encode_heartbeat(beat), "ep") == wire.Heartbeat(
        "ep", 12.5, {"state": "online"})
    task = wire.TaskMessage(**_TASK, task_group_id="g", attempt=2, max_retries=0, direct=True)
    assert wire.decode_task(wire.encode(task)) == task
    record = wire.DirectRecord("f", "a" * 64, {"num_ranks": 2}, {}, 3)
    result = wire.ResultMessage(
        task_id="t", status="failed", task_group_id="g", record=record,
        exception=wire.ExceptionInfo("builtins.KeyError", "k", "Traceback", "02\nxx"))
    assert wire.decode_result(wire.encode(result)) == result
    assert wire.decode_results(wire.encode_results([result])) == [result]


def test_messages_of_this_version_match_the_bytes_of_the_previous_ones():
    """Old endpoints and brokers interoperate: the same keys, in the same order."""
    assert wire.encode_cancel(["a"]) == b'{"v":1,"task_ids":["a"]}'
    assert wire.encode_start_child(wire.StartChild("c", "u", "n")) == \
        b'{"v":1,"child_id":"c","user_id":"u","username":"n","user_endpoint_config":{}}'
    assert wire.encode_child_failed(wire.ChildFailed("c", "e")) == \
        b'{"v":1,"child_id":"c","error":"e"}'
    record = {"function_id": "f", "function_sha256": "a" * 64,
              "resource_specification": {}, "user_endpoint_config": {}, "max_retries": None}
    typed = wire.ResultMessage("t", "success", record=wire.DirectRecord("f", "a" * 64))
    assert wire.encode_results([typed]) == wire.encode({"v": 1, "results": [{
        "task_id": "t", "status": "success", "result": None, "exception": None,
        "details": {}, "task_group_id": None, "record": record}]})


def test_a_malformed_record_costs_the_record_not_the_result():
    for bad in ({"function_id": 1}, {"function_id": "f", "function_sha256": "short"},
                {"function_id": "f", "function_sha256": "a" * 64, "max_retries": -1}):
        [r] = wire.decode_results(_results(record=bad))
        assert r.record is None and r.result == _RESULT["result"]
    [r] = wire.decode_results(_results(record={"function_id": "f", "function_sha256": "a" * 64,
                                               "max_retries": 2, "later": 1}))
    assert r.record == wire.DirectRecord("f", "a" * 64, max_retries=2)


def test_direct_tasks_name_one_group_by_uuids():
    import uuid

    def ids() -> dict[str, str]:
        return {"task_id": str(uuid.uuid4()), "function_id": str(uuid.uuid4())}

    group = str(uuid.uuid4())
    good = {**_TASK, **ids(), "task_group_id": group, "direct": True}
    [task] = wire.decode_direct_tasks(wire.encode({"v": 1, "tasks": [good]}))
    assert task.direct and task.task_group_id == group
    for bad in ([], [{**good, "task_id": "t"}], [{**good, "task_group_id": None}],
                [{**good, "function_id": good["function_id"].upper()}],
                [good, {**good, **ids(), "task_group_id": str(uuid.uuid4())}]):
        with pytest.raises(wire.WireError):
            wire.decode_direct_tasks(wire.encode({"v": 1, "tasks": bad}))


def test_a_consumers_own_check_runs_on_the_document_and_raises_wire_error():
    """The broker's database rule (NUL, lone surrogates), applied around the wire decoder."""
    from fnrelay_broker.validation import check_tree

    with pytest.raises(wire.WireError, match="NUL"):
        wire.decode_results(_results(result="a\x00b"), check=check_tree)
    with pytest.raises(wire.WireError, match="surrogate"):
        wire.decode_status(_updates(detail="\ud800"), finite=True, check=check_tree)
    [r] = wire.decode_results(b'{"v":1,"results":[{"task_id":"t","status":"failed",'
                              b'"details":{"t":NaN,"u":1e999}}]}', finite=True, check=check_tree)
    assert r.details == {"t": None, "u": None}


def test_a_submit_entry_becomes_one_task_message():
    entry = {"function_id": "f", "payload": "p", "resource_specification": None,
             "max_retries": 2}
    task = wire.task_from_entry("t", entry, "01\nfn", "g", direct=True)
    assert task == wire.TaskMessage("t", "f", "01\nfn", "p", "g", {}, {}, 1, 2, True)
    assert not wire.task_from_entry("t", entry, "01\nfn", "g").direct
