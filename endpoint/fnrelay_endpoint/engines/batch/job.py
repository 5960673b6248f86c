"""The entry point a batch job runs: ``python -m fnrelay_endpoint.engines.batch.job SANDBOX``.

It reads the task from the sandbox, runs it with `worker.execute` (so a task's own failure is a
result, not a crash) and writes result.json atomically. It exits 0 whenever it wrote a result:
a nonzero job exit therefore means the job itself broke (walltime, memory, a dead node...), and
the engine reports that with the job's output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fnrelay_endpoint.engines.batch.sandbox import Sandbox

#: Scheduler variables holding the job id, recorded in the result's details.
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m fnrelay_endpoint.engines.batch.job SANDBOX", file=sys.stderr)
        return 2
    sandbox = Sandbox(Path(args[0]))
    try:
        task = sandbox.read_task()
    except (OSError, ValueError, TypeError) as e:
        print(f"fnrelay: cannot read the task from {sandbox.task_file}: {e}", file=sys.stderr)
        return 2
    from fnrelay_endpoint.worker import execute  # after the cheap checks: imports dill etc.

    result = execute(task)
    for name in JOB_ID_VARIABLES:
        if os.environ.get(name):
            result.details["batch_job_id"] = os.environ[name]
            break
    # The task's prints are in Python's buffers: into the job's output before the result
    # exists, since the engine reads the output once it sees the result.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    sandbox.write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
