"""Job arrays: many tasks with the same specification in one submission.

Every task keeps its own sandbox and rendered `job.sh`, so an element runs exactly what a job
of its own would run; the array's script only picks its element's sandbox from a list and
`exec`s that script there. The array's directives are the first task's (the same for every
task with the same specification); job name and output come from the command line, which
overrides them. Each element is then watched, cancelled and settled by its own id (`1234_5`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fnrelay_endpoint.engines.batch.sandbox import STDERR_FILE, STDOUT_FILE, write_atomic
from fnrelay_endpoint.engines.batch.templating import shquote

#: Directory under the endpoint's work directory holding one directory per array.
ARRAYS_DIR = "arrays"
#: Elements per array at most (Slurm's default MaxArraySize is 1001: indices 0..1000).
MAX_ELEMENTS = 1000
#: List of the elements' sandboxes, one a line, in index order.
SANDBOX_LIST = "sandboxes"


def pack_key(resource_specification: dict[str, Any] | None, mpi: bool) -> str:
    """Tasks with equal keys render the same directives and may share an array."""
    return json.dumps([resource_specification or {}, mpi], sort_keys=True, default=str)


def array_script(task_script: str, sandboxes: Path, index_variable: str) -> str:
    """The array's script: the task script's leading directive lines, then the dispatcher."""
    header = []
    for line in task_script.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    dispatch = [
        "set -eu",
        f'fnrelay_sandbox=$(sed -n "$(({index_variable} + 1))p" {shquote(str(sandboxes))})',
        'cd "$fnrelay_sandbox"',
        f"exec ./job.sh > {STDOUT_FILE} 2> {STDERR_FILE}",
    ]
    return "\n".join(header + dispatch) + "\n"


def write_array(directory: Path, task_script: str, sandboxes: list[Path],
                index_variable: str) -> Path:
    """Write the sandbox list and the array script into `directory`; the script's path."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    listing = directory / SANDBOX_LIST
    write_atomic(listing, "".join(f"{path.resolve()}\n" for path in sandboxes))
    script = directory / "array.sh"
    write_atomic(script, array_script(task_script, listing, index_variable))
    script.chmod(0o700)
    return script
