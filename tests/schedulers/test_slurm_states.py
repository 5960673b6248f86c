"""Slurm state mapping and squeue parsing: the table the batch engine's task states rest on."""

from __future__ import annotations

import pytest

from fnrelay_endpoint.engines.batch.schedulers.base import (
    JobState,
    SchedulerError,
    make_scheduler,
    read_exit_status,
    status_from_exit_file,
)
from fnrelay_endpoint.engines.batch.schedulers.slurm import SlurmScheduler, map_state, parse_squeue

S = JobState


@pytest.mark.parametrize("native, raw, reason, state, code", [
    ("PENDING", "0", "Resources", S.QUEUED, None),
    ("CONFIGURING", "0", "None", S.QUEUED, None),
    ("RUNNING", "0", "None", S.RUNNING, None),
    ("COMPLETING", "0", "None", S.RUNNING, None),
    ("COMPLETED", "0", "None", S.COMPLETED, 0),
    ("FAILED", "768", "NonZeroExitCode", S.FAILED, 3),
    ("FAILED", "3:0", "NonZeroExitCode", S.FAILED, 3),
    ("TIMEOUT", "15", "TimeLimit", S.FAILED, 143),
    ("OUT_OF_MEMORY", "9", "OutOfMemory", S.FAILED, 137),
    ("DEADLINE", "0", "DeadLine", S.FAILED, 0),
    ("CANCELLED", "15", "None", S.FAILED, 143),
    ("NODE_FAIL", "0", "NodeDown", S.INFRASTRUCTURE, 0),
    ("BOOT_FAIL", "0", "None", S.INFRASTRUCTURE, 0),
    ("PREEMPTED", "0", "None", S.INFRASTRUCTURE, 0),
])
def test_slurm_states_map_to_engine_states(native, raw, reason, state, code):
    status = map_state(native, raw, reason)
    assert (status.state, status.native_state, status.exit_code) == (state, native, code)


@pytest.mark.parametrize("native, words", [
    ("TIMEOUT", "walltime"), ("OUT_OF_MEMORY", "memory"), ("CANCELLED", "scheduler"),
    ("FAILED", "exit status 3"), ("NODE_FAIL", "NODE_FAIL: NodeDown"),
])
def test_failures_carry_a_reason_for_the_user(native, words):
    assert words in map_state(native, "768", "NodeDown").reason


def test_cancel_requested_through_the_adapter_is_cancelled():
    assert map_state("CANCELLED", "0", "None", cancelled_here=True).state is S.CANCELLED


def test_signal_kill_is_reported_as_such():
    status = map_state("FAILED", "0:9", "")
    assert (status.exit_code, status.reason) == (137, "killed by signal 9")


def test_parse_squeue_keeps_names_and_skips_noise():
    text = ("12|RUNNING|0|None|fnrelay-a|b\n"
            "garbage line\n"
            "13|PENDING|0|(Resources)|fnrelay-c\n")
    assert parse_squeue(text) == {"12": ("RUNNING", "0", "None", "fnrelay-a|b"),
                                  "13": ("PENDING", "0", "(Resources)", "fnrelay-c")}


def test_exit_status_file(tmp_path):
    assert read_exit_status(tmp_path) is None and status_from_exit_file(tmp_path) is None
    (tmp_path / "exit_status").write_text("garbage")
    assert read_exit_status(tmp_path) is None
    (tmp_path / "exit_status").write_text("0\n")
    assert status_from_exit_file(tmp_path).state is S.COMPLETED
    (tmp_path / "exit_status").write_text("7\n")
    final = status_from_exit_file(tmp_path)
    assert (final.state, final.exit_code) == (S.FAILED, 7)


def test_make_scheduler_names():
    assert isinstance(make_scheduler("slurm"), SlurmScheduler)
    assert make_scheduler("pbspro").directive_prefix == "#PBS"
    assert make_scheduler("lsf").directive_prefix == "#BSUB"
    with pytest.raises(SchedulerError, match="cobalt"):
        make_scheduler("cobalt")


def test_missing_tool_is_a_clear_error(tmp_path):
    sched = SlurmScheduler(env={"PATH": str(tmp_path)})
    with pytest.raises(SchedulerError, match="sbatch not found"):
        sched.submit(tmp_path / "job.sh", "fnrelay-x", tmp_path)


@pytest.mark.parametrize("native, reason", [
    ("PENDING", "JobHeldAdmin"), ("PENDING", "JobHeldUser"), ("PENDING", "PartitionTimeLimit"),
    ("PENDING", "InvalidAccount"), ("PENDING", "InvalidQOS"),
    ("PENDING", "launch failed requeued held"), ("REQUEUE_HOLD", "None"),
    ("SPECIAL_EXIT", "None"),
])
def test_held_and_never_runnable_jobs_are_held_with_the_reason(native, reason):
    """A job no amount of waiting starts must not leave its task waiting forever."""
    status = map_state(native, "0", reason)
    assert status.state is S.HELD
    assert status.reason == (native if reason == "None" else reason)


@pytest.mark.parametrize("reason", ["Resources", "Priority", "QOSMaxJobsPerUserLimit",
                                    "BeginTime", "ReqNodeNotAvail"])
def test_reasons_that_clear_by_themselves_keep_the_job_queued(reason):
    assert map_state("PENDING", "0", reason).state is S.QUEUED
