"""Job arrays without a cluster: the dispatcher runs each element's own job.sh in its own
sandbox (real bash), and a burst of tasks is packed into one or two sbatch calls."""

from __future__ import annotations

import os
import subprocess
import time

from batch.conftest import make_task

from fnrelay_endpoint.engines.batch.arrays import pack_key, write_array
from fnrelay_endpoint.engines.batch.engine import BatchEngine
from fnrelay_endpoint.engines.batch.sandbox import Sandbox


def test_each_element_runs_its_own_script_in_its_sandbox(tmp_path):
    sandboxes = [tmp_path / f"task{i}" for i in range(3)]
    for i, box in enumerate(sandboxes):
        box.mkdir()
        (box / "job.sh").write_text(f"#!/bin/bash\n#SBATCH --time=5\necho {i} $PWD\n"
                                    "echo oops >&2\n")
        (box / "job.sh").chmod(0o700)
    script = write_array(tmp_path / "array", (sandboxes[0] / "job.sh").read_text(), sandboxes,
                         "SLURM_ARRAY_TASK_ID")
    assert script.read_text().startswith("#!/bin/bash\n#SBATCH --time=5\nset -eu\n")
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2"}
    subprocess.run(["bash", str(script)], env=env, check=True, cwd=tmp_path)
    assert (sandboxes[2] / "stdout").read_text() == f"2 {sandboxes[2]}\n"
    assert (sandboxes[2] / "stderr").read_text() == "oops\n"
    assert not (sandboxes[0] / "stdout").exists()


def test_pack_key_separates_specifications_and_mpi():
    assert pack_key({"walltime": 60, "partition": "a"}, False) == \
        pack_key({"partition": "a", "walltime": 60}, False)
    assert pack_key({}, False) == pack_key(None, False)
    assert pack_key({}, False) != pack_key({}, True)
    assert pack_key({"walltime": 60}, False) != pack_key({"walltime": 61}, False)


RECORDING_SBATCH = """#!/bin/sh
echo "$*" >> {calls}
echo 4242
"""


def test_a_map_of_1000_tasks_makes_at_most_two_submissions(tmp_path, monkeypatch):
    """Only the submissions are looked at: sbatch records its call and prints a job id,
    squeue knows no job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = bin_dir / "calls"
    (bin_dir / "sbatch").write_text(RECORDING_SBATCH.format(calls=calls))
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "squeue").write_text("#!/bin/sh\n")  # the poller sees no jobs yet
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    engine = BatchEngine({"type": "batch", "scheduler": "slurm", "launcher": "srun",
                          "pack_window": 1, "poll_interval": 600}, tmp_path / "endpoint",
                         lambda result: None, lambda update: None)
    engine.start()
    try:
        tasks = [make_task(abs, -n) for n in range(1000)]
        for task in tasks:
            engine.submit(task)
        sandboxes = [Sandbox.of(tmp_path / "endpoint", t.task_id) for t in tasks]
        deadline = time.monotonic() + 60
        while not sandboxes[-1].job_id_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        engine.shutdown()
    submissions = calls.read_text().splitlines()
    assert 1 <= len(submissions) <= 2, submissions
    ids = {sandbox.job_id() for sandbox in sandboxes}
    assert len(ids) == 1000 and all(i and i.startswith("4242_") for i in ids)
