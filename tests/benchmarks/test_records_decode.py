"""benchmarks.records_decode: its message is what the broker records, and a run prints the
figure. Timings are never asserted."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.records_decode import records_message
from fnrelay_broker import inbound


def test_the_message_decodes_as_the_records_of_one_group() -> None:
    tasks = inbound.direct_tasks(records_message(50))
    assert len(tasks) == 50 and len({t.task_id for t in tasks}) == 50
    assert len({t.task_group_id for t in tasks}) == 1


def test_a_run_prints_the_cost_per_record_and_bad_counts_are_refused() -> None:
    cmd = [sys.executable, "-m", "benchmarks.records_decode"]
    run = subprocess.run(cmd + ["--tasks", "20", "--rounds", "2"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "20 records" in run.stdout and "us per record decoded" in run.stdout
    bad = subprocess.run(cmd + ["--tasks", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "at least 1" in bad.stderr
