"""benchmarks.result_mac: its MAC input tells fields apart, and a quick run gives every figure.
Timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.result_mac import frame, mac_input
from fnrelay.wire import ExceptionInfo, ResultMessage


def test_the_mac_input_keeps_fields_apart_and_covers_what_is_unpickled() -> None:
    assert frame(b"ab", b"c") != frame(b"a", b"bc")
    assert frame(b"") != frame(None)
    ok = ResultMessage(task_id="t1", status="success", result="03\n1", task_group_id="g")
    assert mac_input(ok) != mac_input(ResultMessage("t2", "success", "03\n1", task_group_id="g"))
    failed = ResultMessage("t1", "failed", exception=ExceptionInfo("E", "m", "tb", "02\nAA=="),
                           task_group_id="g")
    other = ResultMessage("t1", "failed", exception=ExceptionInfo("E", "m", "tb", "02\nAB=="),
                          task_group_id="g")
    assert mac_input(failed) != mac_input(other)  # the pickled exception is covered


def test_a_quick_run_times_every_size_and_kind() -> None:
    run = subprocess.run([sys.executable, "-m", "benchmarks.result_mac", "--quick", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)["rows"]
    assert [(r["kind"], r["size"]) for r in rows] == [
        (kind, size) for kind in ("json", "dill") for size in ("100 B", "10 KiB", "1 MiB")]
    for r, target in zip(rows, [100, 10240, 1048576] * 2, strict=True):
        assert target * 0.9 <= r["value_bytes"] <= target
        assert all(r[k] > 0 for k in ("decode_results", "deserialize", "hmac_sha256"))
