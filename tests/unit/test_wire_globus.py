"""Globus Compute's wire format (fnrelay.wire.globus): translations both ways, and the
format a task carries to the endpoint."""

from __future__ import annotations

import uuid

import pytest

from fnrelay import wire
from fnrelay.wire import globus

pytest.importorskip("globus_compute_common")


def packed(*buffers: str) -> str:
    return "".join(f"{len(b)}\n{b}" for b in buffers)


def test_task_format_round_trips_and_defaults_to_fnrelay():
    t = wire.TaskMessage(task_id="t", function_id="f", function="F", payload="P",
                         format=wire.FORMAT_GLOBUS, result_serializers=["a.B"])
    back = wire.decode_tasks(wire.encode_tasks([t]))[0]
    assert (back.format, back.result_serializers) == (wire.FORMAT_GLOBUS, ["a.B"])
    old = wire.TaskMessage.from_dict({"task_id": "t", "function_id": "f", "function": "F",
                                      "payload": "P"})
    assert (old.format, old.result_serializers) == (wire.FORMAT_FNRELAY, [])


@pytest.mark.parametrize("item", [{"format": "pickle"}, {"result_serializers": "a.B"},
                                  {"result_serializers": [1]}])
def test_bad_format_fields_are_wire_errors(item):
    with pytest.raises(wire.WireError):
        wire.TaskMessage.from_dict({"task_id": "t", "function_id": "f", "function": "F",
                                    "payload": "P", **item})


def test_submit_entries_keep_order_and_record_the_format():
    f1, f2 = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"tasks": {f1: [packed("a", "k"), packed("b", "k")], f2: [packed("c", "k")]},
            "resource_specification": {"num_nodes": 1}, "result_serializers": ["x.Y"],
            "create_queue": True, "user_runtime": {"python_version": "3"}}
    entries = globus.submit_entries(body)
    assert [e["function_id"] for e in entries] == [f1, f1, f2]
    assert {e["format"] for e in entries} == {wire.FORMAT_GLOBUS}
    assert entries[0]["resource_specification"] == {"num_nodes": 1}
    answer = globus.submit_answer(entries, ["t1", "t2", "t3"], "g", "e", "r")
    assert answer["tasks"] == {f1: ["t1", "t2"], f2: ["t3"]}


@pytest.mark.parametrize("body", [
    [], {"tasks": {}}, {"tasks": {"not-a-uuid": [packed("a", "k")]}},
    {"tasks": {str(uuid.uuid4()): ["garbage"]}},
    {"tasks": {str(uuid.uuid4()): [packed("only-one")]}},
    {"tasks": {str(uuid.uuid4()): [packed("a", "k")]}, "result_serializers": "x"},
    {"tasks": {str(uuid.uuid4()): [packed("a", "k")]}, "user_endpoint_config": []},
])
def test_malformed_submit_bodies_are_wire_errors(body):
    with pytest.raises(wire.WireError):
        globus.submit_entries(body)


def test_function_registration():
    code = packed("01\nabc")
    assert globus.function_code({"function_name": "f", "function_code": code,
                                 "serialized": True}) == ("f", code, None)
    # register_source_code: source text becomes one PureSourceTextInspect buffer ("st\n")
    source = "def f(x):\n    return x\n"
    assert globus.function_code({"function_name": "f", "function_code": source,
                                 "serialized": False}) == ("f", packed(f"st\nf:{source}"), None)
    for bad in ({"function_name": "not a name", "function_code": source, "serialized": False},
                {"function_name": "f", "function_code": code, "public": True},
                {"function_name": "f", "function_code": "x"}):
        with pytest.raises(wire.WireError):
            globus.function_code(bad)


def test_task_record_has_completion_t_only_when_finished():
    rec = {"task_id": "t", "status": "waiting-for-endpoint", "pending": True, "details": {}}
    assert globus.task_record(rec) == {"task_id": "t", "status": "waiting-for-ep",
                                       "task_group_id": None, "details": {}}
    done = {**rec, "status": "success", "pending": False, "completed": 12.5, "result": "R"}
    assert globus.task_record(done)["completion_t"] == "12.5"
    assert globus.task_record(done)["result"] == "R"
    failed = {**rec, "status": "failed", "pending": False, "completed": 1.0,
              "exception": {"type": "builtins.ValueError", "message": "no",
                            "traceback": "Traceback...\nValueError: no\n"}}
    assert globus.task_record(failed)["exception"].endswith("ValueError: no\n")


def test_results_pack_as_globus_compute_results_and_back():
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Result

    tid = str(uuid.uuid4())
    ok = wire.ResultMessage(task_id=tid, status="success", result="00\nabc")
    msg = messagepack.unpack(globus.pack_result(ok))
    assert isinstance(msg, Result) and not msg.is_error and msg.data == "00\nabc"
    assert globus.unpack_result(globus.pack_result(ok)).result == "00\nabc"
    bad = wire.ResultMessage(task_id=tid, status="failed", exception=wire.ExceptionInfo(
        type="builtins.ZeroDivisionError", message="division by zero",
        traceback="Traceback...\nZeroDivisionError: division by zero\n"))
    msg = messagepack.unpack(globus.pack_result(bad))
    assert msg.is_error and "ZeroDivisionError" in msg.data
    assert msg.error_details.user_message == "ZeroDivisionError: division by zero"
    back = globus.unpack_result(globus.pack_result(bad))
    assert back.status == "failed" and back.exception is not None
    with pytest.raises(wire.WireError):
        globus.unpack_result(b"not messagepack")


def test_a_results_format_is_the_brokers_note_never_sent():
    r = wire.ResultMessage(task_id="t", status="success", format=wire.FORMAT_GLOBUS)
    assert b"format" not in wire.encode_results([r])
    assert wire.decode_results(wire.encode_results([r]))[0].format == wire.FORMAT_FNRELAY


def test_a_task_for_the_official_endpoint_is_its_messagepack_task_and_headers():
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Task

    tid, fid = str(uuid.uuid4()), str(uuid.uuid4())
    body, headers = globus.pack_task(tid, fid, packed("F"), packed("a", "k"), {"num_nodes": 1},
                                     ["m.S"])
    task = messagepack.unpack(body)
    assert isinstance(task, Task) and str(task.task_id) == tid
    assert task.task_buffer == packed("F", "a", "k")
    assert headers == {"task_uuid": tid, "function_uuid": fid,
                       "resource_specification": '{"num_nodes": 1}',
                       "result_serializers": ["m.S"]}
    assert globus.pack_task(tid, fid, "", "", {}, [])[1]["resource_specification"] == "null"


def test_status_reports_read_and_other_messages_are_wire_errors():
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import EPStatusReport

    eid = uuid.uuid4()
    report = messagepack.pack(EPStatusReport(endpoint_id=eid, global_state={
        "heartbeat_period": 0}, task_statuses={}))
    assert globus.status_report(report) == {"heartbeat_period": 0}
    tid = str(uuid.uuid4())
    with pytest.raises(wire.WireError):
        globus.status_report(globus.pack_task(tid, tid, "", "", {}, [])[0])
    with pytest.raises(wire.WireError):
        globus.status_report(b"not messagepack")


@pytest.mark.parametrize("body, words", [
    ([], "JSON object"), ({"endpoint_name": ""}, "endpoint_name"),
    ({"endpoint_name": "x" * 129}, "128"), ({"endpoint_name": 3}, "endpoint_name"),
    ({"endpoint_name": "e", "high_assurance": True}, "high_assurance"),
    ({"endpoint_name": "e", "authentication_policy": "p"}, "authentication_policy"),
    ({"endpoint_name": "e", "allowed_functions": "f"}, "allowed_functions"),
    ({"endpoint_name": "e", "metadata": []}, "metadata"),
])
def test_endpoint_registrations_fnrelay_cannot_honour_are_refused(body, words):
    with pytest.raises(wire.WireError, match=words):
        globus.endpoint_registration(body)


def test_an_endpoint_registration_as_globus_compute_endpoint_sends_it():
    body = {"endpoint_name": "gcep", "multi_user": True, "public": True,
            "metadata": {"hostname": "h"}, "allowed_functions": ["f"], "admins": []}
    assert globus.endpoint_registration(body) == ("gcep", True, {"hostname": "h"}, ["f"])


def test_a_results_execution_transitions_become_its_start_and_end():
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Result, TaskTransition
    from globus_compute_common.tasks.constants import ActorName, TaskState

    def step(state, ns):
        return TaskTransition(timestamp=ns, state=state, actor=ActorName.WORKER)

    tid = uuid.uuid4()
    body = messagepack.pack(Result(task_id=tid, data="x", details={"k": 1}, task_statuses=[
        step(TaskState.EXEC_START, 1_700_000_000_500_000_000),
        step(TaskState.EXEC_END, 1_700_000_002_000_000_000)]))
    r = globus.unpack_result(body)
    assert r.details == {"k": 1, "started": 1_700_000_000.5, "completed": 1_700_000_002.0}
    assert globus.unpack_result(messagepack.pack(Result(task_id=tid, data="x"))).details == {}
