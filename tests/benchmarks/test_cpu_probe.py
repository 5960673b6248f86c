"""The probes: benchmarks.cpu counts a process's descendants only when asked; the probes
explain themselves and refuse a bad count with a usage error."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from benchmarks.cpu import cpu_seconds


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_of_a_busy_child_counts_for_its_parent_tree_only() -> None:
    child = multiprocessing.get_context("fork").Process(target=_burn, args=(0.5,))
    tree_before, own_before = cpu_seconds(os.getpid()), cpu_seconds(os.getpid(), False)
    child.start()
    deadline = time.monotonic() + 30
    while cpu_seconds(child.pid) < 0.2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the child is still busy (it burns 0.5 s): counted while it lives
    tree_during = cpu_seconds(os.getpid())
    own_during = cpu_seconds(os.getpid(), False)
    child.join()
    assert tree_during - tree_before >= 0.2
    assert own_during - own_before < 0.15


@pytest.mark.parametrize("probe", ["cpu", "hops"])
def test_a_probes_help_explains_and_a_bad_count_is_a_usage_error(probe: str) -> None:
    run = [sys.executable, "-m", f"benchmarks.{probe}"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and f"python -m benchmarks.{probe}" in shown.stdout
    assert "lone call" in shown.stdout  # the module's docstring says what it measures
    for bad in ("0", "many"):
        refused = subprocess.run([*run, bad], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "usage:" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_the_vcpu_probe_times_both_ways_and_refuses_a_bad_count() -> None:
    run = [sys.executable, "-m", "benchmarks.vcpu"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "SCHED_IDLE" in shown.stdout
    done = subprocess.run([*run, "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" median")[0].strip() for line in lines] == [
        "alone", "beside an idle-class spinner"]
    assert all(float(line.split("median")[1].split("ms")[0]) > 0 for line in lines)
    refused = subprocess.run([*run, "0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "usage:" in refused.stderr
    assert "Traceback" not in refused.stderr
