"""Harvester monitor plugin: the status of many workers from one batched status query.

Harvester's convention: ``check_workers`` returns ``(True, [(new_status, diag), ...])`` in the
order of the workers; a ``new_status`` of None means "could not check this worker" and
Harvester keeps its previous status (and kills it only after its checkTimeout). So a broker
that cannot be reached yields None for each worker, never a false failure.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fnrelay.errors import FnRelayError
from fnrelay.functions import ShellResult
from fnrelay.results import outcome
from fnrelay.wire import TaskState

from .common import (
    ST_CANCELLED,
    ST_FAILED,
    ST_FINISHED,
    ST_RUNNING,
    ST_SUBMITTED,
    FnRelayPlugin,
    log_paths,
    short,
)

Check = tuple[str | None, str]

#: Non-terminal task states -> worker status.
LIVE_STATUS = {
    TaskState.RECEIVED.value: ST_SUBMITTED,
    TaskState.WAITING_FOR_ENDPOINT.value: ST_SUBMITTED,
    TaskState.WAITING_FOR_NODES.value: ST_SUBMITTED,
    TaskState.RUNNING.value: ST_RUNNING,
}


class FnRelayMonitor(FnRelayPlugin):
    """Check workers submitted by FnRelaySubmitter (their batchID is the task id).

    Queue config keys: FnRelayPlugin's ``broker_url``, ``token``, ``max_retries``.
    """

    def check_workers(self, workspec_list: list[Any]) -> tuple[bool, list[Check]]:
        """(True, [(new_status | None, diag), ...]) in the order of ``workspec_list``."""
        task_ids = [w.batchID for w in workspec_list if w.batchID]
        try:
            answer = self.client.get_tasks(task_ids) if task_ids else {"tasks": {}, "unknown": []}
        except FnRelayError as e:
            diag = short(f"cannot check the worker's fnrelay task: {e}")
            return True, [(None, diag) for _ in workspec_list]
        records, unknown = answer.get("tasks", {}), set(answer.get("unknown", []))
        return True, [self._check(w, records, unknown) for w in workspec_list]

    def _check(self, workspec: Any, records: dict[str, Any], unknown: set[str]) -> Check:
        task_id = workspec.batchID
        if not task_id:
            return ST_FAILED, "worker has no batchID: it was never submitted to fnrelay"
        if task_id in unknown or task_id not in records:
            workspec.nativeStatus = "unknown"
            return ST_FAILED, f"fnrelay task {task_id} is unknown to the broker"
        record = records[task_id]
        status = record["status"]
        workspec.nativeStatus = status
        if record["pending"]:
            return LIVE_STATUS.get(status, ST_SUBMITTED), f"fnrelay task {task_id} is {status}"
        try:
            return self._terminal(workspec, record)
        except OSError as e:
            return None, short(f"cannot write the logs of task {task_id}: {e}")

    def _terminal(self, workspec: Any, record: dict[str, Any]) -> Check:
        """The final status of a finished task; its output goes to the access point."""
        task_id, status = record["task_id"], record["status"]
        try:
            ok, value = outcome(task_id, status, record.get("result"), record.get("exception"),
                                record.get("details"))
        except FnRelayError as e:  # a value we cannot deserialize
            ok, value = False, e
        if status == TaskState.CANCELLED.value:
            self._write_logs(workspec, "", f"fnrelay task {task_id} was cancelled\n")
            return ST_CANCELLED, f"fnrelay task {task_id} was cancelled"
        if ok and isinstance(value, ShellResult):
            workspec.nativeExitCode = value.returncode
            self._write_logs(workspec, value.stdout, value.stderr)
            if value.returncode == 0:
                return ST_FINISHED, ""
            return ST_FAILED, short(
                f"pilot exited with {value.returncode}: {_last_line(value.stderr)}")
        if ok:
            workspec.nativeExitCode = 0
            self._write_logs(workspec, f"{value}\n", "")
            return ST_FINISHED, ""
        traceback = getattr(value, "remote_traceback", "") or ""
        self._write_logs(workspec, "", f"{traceback}{value}\n")
        return ST_FAILED, short(f"fnrelay task {task_id} failed: {value}")

    def _write_logs(self, workspec: Any, stdout: str, stderr: str) -> None:
        out_path, err_path = log_paths(workspec)
        for path, text in ((out_path, stdout), (err_path, stderr)):
            _write_atomic(path, text)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no stderr)"


def _write_atomic(path: str, text: str) -> None:
    """Replace ``path`` whole, so a log reader never sees half a file."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fnrelay-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
