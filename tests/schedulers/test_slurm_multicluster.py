"""Multi-cluster Slurm: a job sbatch placed on another cluster (`<id>;<cluster>`) is watched and
cancelled there. No second cluster (it needs slurmdbd) runs here: sbatch, squeue and scancel
are stand-ins that record their arguments and print what Slurm 22.05 prints
(`sbatch --parsable`: "id;cluster"; `squeue -M`: a "CLUSTER: name" line before the rows)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fnrelay_endpoint.engines.batch.schedulers.base import JobState
from fnrelay_endpoint.engines.batch.schedulers.slurm import SlurmScheduler

STANDIN = """#!/bin/bash
echo "$(basename "$0") $*" >> "$FNRELAY_CALLS"
case "$(basename "$0") $*" in
  sbatch*) echo "1234;c2" ;;
  *"-M c2"*) printf 'CLUSTER: c2\\n1234|PENDING|0|Priority|fnrelay-a|\\n' ;;
  squeue*) printf '77|RUNNING|0|None|fnrelay-b|\\n' ;;
esac
"""


@pytest.fixture
def sched(tmp_path: Path) -> tuple[SlurmScheduler, Path]:
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("sbatch", "squeue", "scancel"):
        (bin_dir / tool).write_text(STANDIN)
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FNRELAY_CALLS": str(calls)}
    return SlurmScheduler(timeout=10, env=env), calls


def test_the_cluster_of_a_submitted_job_is_kept(sched, tmp_path):
    scheduler, _ = sched
    assert scheduler.submit(tmp_path / "job.sh", "fnrelay-a", tmp_path) == "1234;c2"


def test_a_job_on_another_cluster_is_queried_and_cancelled_there(sched):
    scheduler, calls = sched
    statuses = scheduler.status(["1234;c2", "77"])
    assert statuses["1234;c2"].state is JobState.QUEUED  # not lost while it waits on c2
    assert statuses["77"].state is JobState.RUNNING
    scheduler.cancel("1234;c2")
    lines = calls.read_text().splitlines()
    assert any(line.startswith("squeue -M c2 ") and "--jobs=1234 " in line for line in lines)
    assert any(line.startswith("squeue --noheader") and "--jobs=77 " in line for line in lines)
    assert "scancel -M c2 1234" in lines
