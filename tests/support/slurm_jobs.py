"""Job scripts and polling helpers shared by the Slurm tests."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

from fnrelay_endpoint.engines.batch.schedulers.base import EXIT_STATUS_FILE, JobStatus, Scheduler


def write_job(sandbox: Path, body: str, directives: tuple[str, ...] = ()) -> Path:
    """A job script like the batch engine's: output in the sandbox, exit status file at the end."""
    sandbox.mkdir(parents=True, exist_ok=True)
    sb = shlex.quote(str(sandbox))
    lines = ["#!/bin/bash", f"#SBATCH --output={sandbox}/stdout",
             f"#SBATCH --error={sandbox}/stderr", *directives,
             f"cd {sb}", f"( {body}\n)", "rc=$?",
             f'echo "$rc" > {sb}/{EXIT_STATUS_FILE}.tmp && mv {sb}/{EXIT_STATUS_FILE}.tmp '
             f"{sb}/{EXIT_STATUS_FILE}", 'exit "$rc"']
    script = sandbox / "job.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def wait_gate(sandbox: Path) -> str:
    """Shell that blocks until the test creates `<sandbox>/gate` (so a job stays running)."""
    return f"while [ ! -e {shlex.quote(str(sandbox / 'gate'))} ]; do sleep 0.1; done"


def wait_status(sched: Scheduler, job_id: str, done: Callable[[JobStatus], bool],
                timeout: float = 40) -> JobStatus:
    """Poll until `done(status)`; fails with the last status seen after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        status = sched.status([job_id])[job_id]
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {status}")
        time.sleep(0.2)
