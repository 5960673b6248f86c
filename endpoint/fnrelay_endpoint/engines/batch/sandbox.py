"""A batch task's sandbox: the directory that is its journal on the shared filesystem.

Everything the batch engine must know after a crash lives here, each file written atomically
(write a temporary file, then rename), so a reader sees a whole file or none:

  task.json    the TaskMessage (protocol JSON), read by the in-job worker
  job.sh       the rendered batch script
  job_id       the scheduler's job id, written right after submission
  stdout/err   the job's output (the scheduler writes them)
  exit_status  the job script's exit status (written by the script's EXIT trap)
  result.json  the ResultMessage the in-job worker wrote
  final.json   the ResultMessage the engine reported: the task is settled

Each attempt of a task (the agent re-runs one lost to a node failure or preemption) has its own
sandbox, ``<task_id>`` for the first and ``<task_id>@<n>`` for the n-th: a retry must neither
replay the lost attempt's final.json nor re-watch its job, and the lost job's processes may
still write into their own sandbox. Task ids cannot contain ``@``, so the name is unambiguous.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path

from fnrelay import wire
from fnrelay.wire import ResultMessage, TaskMessage
from fnrelay.wire.names import EXIT_STATUS_FILE

TASKS_DIR = "tasks"
#: A job's own output files in its sandbox. Here, not in `templating`: a local worker reads
#: task output through this module and must not need Jinja2 (a foreign interpreter's
#: environment holds only fnrelay and dill).
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"
#: Task ids become directory names: plain names only (the broker makes UUIDs).
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ATTEMPT_SEPARATOR = "@"


def parse_sandbox_name(name: str) -> tuple[str, int]:
    """(task id, attempt) of a sandbox directory name."""
    task_id, sep, attempt = name.rpartition(ATTEMPT_SEPARATOR)
    if sep and attempt.isdigit() and int(attempt) > 1:
        return task_id, int(attempt)
    return name, 1


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, fsynced, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tail(path: Path, max_lines: int = 20, max_bytes: int = 4096) -> str:
    """The last lines of a (possibly large) output file; '' if there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return "\n".join(lines[-max_lines:])


class Sandbox:
    """The files of one task under ``<workdir>/tasks/<task_id>/``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of(cls, workdir: Path, task_id: str, attempt: int = 1) -> Sandbox:
        if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
            raise ValueError(f"task id {task_id!r} cannot name a sandbox directory")
        name = task_id if attempt <= 1 else f"{task_id}{ATTEMPT_SEPARATOR}{attempt}"
        return cls(Path(workdir) / TASKS_DIR / name)

    task_file = property(lambda self: self.path / "task.json")
    script = property(lambda self: self.path / "job.sh")
    job_id_file = property(lambda self: self.path / "job_id")
    stdout = property(lambda self: self.path / STDOUT_FILE)
    stderr = property(lambda self: self.path / STDERR_FILE)
    exit_status = property(lambda self: self.path / EXIT_STATUS_FILE)
    result_file = property(lambda self: self.path / "result.json")
    final_file = property(lambda self: self.path / "final.json")

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- task --------------------------------------------------------------------------------
    def write_task(self, task: TaskMessage) -> None:
        write_atomic(self.task_file, json.dumps(asdict(task)))

    def read_task(self) -> TaskMessage:
        return wire.decode_task(self.task_file.read_text())

    # --- job id ------------------------------------------------------------------------------
    def write_job_id(self, job_id: str) -> None:
        write_atomic(self.job_id_file, f"{job_id}\n")

    def job_id(self) -> str | None:
        try:
            return self.job_id_file.read_text().strip() or None
        except OSError:
            return None

    # --- results -----------------------------------------------------------------------------
    def write_result(self, result: ResultMessage) -> None:
        write_atomic(self.result_file, json.dumps(asdict(result)))

    def result(self) -> ResultMessage | None:
        """The in-job worker's result, or None if it wrote none (or an unreadable one)."""
        return _read_result(self.result_file)

    def write_final(self, result: ResultMessage) -> None:
        write_atomic(self.final_file, json.dumps(asdict(result)))

    def final(self) -> ResultMessage | None:
        """The result the engine already reported, if any."""
        return _read_result(self.final_file)

    def ran(self) -> bool:
        """True if a job already ran here (it left an exit status or a result)."""
        return self.exit_status.exists() or self.result_file.exists()

    def output_tails(self, max_lines: int = 20) -> dict[str, str]:
        return {"stdout": tail(self.stdout, max_lines), "stderr": tail(self.stderr, max_lines)}

    def output_details(self) -> dict[str, str]:
        """What a result carries of the job's output, as the local engine's results do: each
        non-empty stream's file and its last lines (the user's only view of what the task
        printed; the scheduler wrote it here, not to any log)."""
        details: dict[str, str] = {}
        for name, path in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = tail(path)
            if text:
                details[f"{name}_file"], details[f"{name}_tail"] = str(path), text
        return details


def _read_result(path: Path) -> ResultMessage | None:
    try:
        return wire.decode_result(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
