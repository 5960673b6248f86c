"""Harvester submitter plugin: every worker of a call becomes one fnrelay task, in one request.

Result convention (Harvester's): one ``(True | False | None, message)`` per worker, in order.
False is a permanent refusal of that worker (bad template, bad sizes); None is a temporary
failure Harvester retries (the broker could not take the batch).
"""

from __future__ import annotations

import os
from typing import Any

from fnrelay.client import task_entry
from fnrelay.errors import FnRelayError

from .common import FnRelayPlugin, log_paths, short
from .mapping import WorkerRefused, WorkerTask, worker_task

Outcome = tuple[bool | None, str]


class FnRelaySubmitter(FnRelayPlugin):
    """Submit Harvester workers as ShellFunction/MPIFunction tasks to an fnrelay endpoint.

    Queue config keys: ``endpoint_id`` and ``executable`` (required), ``nCorePerNode``,
    ``nCore`` (default for workers without one), ``partition``, ``account``, ``container``,
    ``conda``, ``user_endpoint_config``, ``task_group_id``, plus FnRelayPlugin's
    ``broker_url``, ``token``, ``max_retries``.
    """

    endpoint_id: str | None = None
    executable: str | None = None
    nCorePerNode: int | None = None
    nCore: int | None = None
    partition: str | None = None
    account: str | None = None
    container: dict | None = None
    conda: dict | None = None
    user_endpoint_config: dict | None = None
    task_group_id: str | None = None

    def __init__(self, **kwarg: Any) -> None:
        FnRelayPlugin.__init__(self, **kwarg)
        self._function_ids: dict[tuple, str] = {}

    def submit_workers(self, workspec_list: list[Any]) -> list[Outcome]:
        """Submit all workers in one batch; one (status, message) per worker, in order."""
        results: list[Outcome | None] = [None] * len(workspec_list)
        tasks: list[tuple[int, WorkerTask]] = []
        for i, workspec in enumerate(workspec_list):
            try:
                tasks.append((i, self._prepare(workspec)))
            except WorkerRefused as e:
                results[i] = (False, short(f"worker {workspec.workerID} refused: {e}"))
            except OSError as e:
                results[i] = (None, short(f"worker {workspec.workerID}: {e}"))
        if tasks:
            self._submit(workspec_list, tasks, results)
        return [r if r is not None else (None, "not submitted") for r in results]

    def _prepare(self, workspec: Any) -> WorkerTask:
        """The worker's task; its access point exists afterwards (the log files go there)."""
        if not self.endpoint_id:
            raise WorkerRefused("queue config 'endpoint_id' is not set")
        task = worker_task(workspec, self)
        workspec.nCore = int(task.kwargs["nCore"])
        os.makedirs(task.kwargs["accessPoint"], exist_ok=True)
        return task

    def _submit(self, workspec_list: list[Any], tasks: list[tuple[int, WorkerTask]],
                results: list[Outcome | None]) -> None:
        try:
            batch = self.client.create_batch(task_group_id=self.task_group_id,
                                             user_endpoint_config=self.user_endpoint_config)
            for _, task in tasks:
                batch.tasks.append(task_entry(
                    self._function_id(task), (), task.kwargs, task.resource_specification,
                    self.user_endpoint_config))
            task_ids = self.client.batch_run(self.endpoint_id, batch)["task_ids"]
        except (FnRelayError, ValueError) as e:
            message = short(f"fnrelay batch submit failed, will retry: {e}")
            for i, _ in tasks:
                results[i] = (None, message)
            return
        for (i, _), task_id in zip(tasks, task_ids, strict=True):
            self._record(workspec_list[i], task_id)
            results[i] = (True, "")

    def _function_id(self, task: WorkerTask) -> str:
        """Register each distinct function once per plugin (one request, not one per worker)."""
        fn = task.function
        key = (type(fn).__name__, fn.cmd, fn.walltime)
        if key not in self._function_ids:
            self._function_ids[key] = self.client.register_function(
                fn, description="Harvester worker (fnrelay.harvester)")
        return self._function_ids[key]

    def _record(self, workspec: Any, task_id: str) -> None:
        """What Harvester keeps of a submitted worker: its task id, where, and its logs."""
        workspec.batchID = task_id
        workspec.submissionHost = self.client.broker_url
        workspec.nativeStatus = "received"
        stdout, stderr = log_paths(workspec)
        workspec.set_log_file("stdout", stdout)
        workspec.set_log_file("stderr", stderr)
