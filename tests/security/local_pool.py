"""A local engine driven as the agent drives it (real forkserver workers, real task processes),
for attacks a task makes on the endpoint that runs it. As tests/endpoint/test_local_engine.py,
with the containment mode chosen by FNRELAY_LOCAL_CONTAINMENT (set before `start`)."""

from __future__ import annotations

import os
import queue
from pathlib import Path

from fnrelay import serialize
from fnrelay.processes import pid_alive
from fnrelay.wire import ResultMessage, TaskMessage, new_id
from fnrelay_endpoint.engines.local.engine import LocalEngine
from support.waiting import wait_for

#: Upper bound for an answer (not a timing assertion).
WAIT = 60.0
MODES = ("cgroup", "fallback")
#: Chooses the mode (fnrelay_endpoint.engines.local.containment.ENV_CONTAINMENT; spelled out
#: so that these tests also run against an endpoint that predates it).
ENV_CONTAINMENT = "FNRELAY_LOCAL_CONTAINMENT"


def make_task(fn, *args, spec: dict | None = None, **kwargs) -> TaskMessage:  # type: ignore[no-untyped-def]
    task = TaskMessage(task_id=new_id(), function_id=new_id(),
                       function=serialize.serialize_function(fn),
                       payload=serialize.serialize_args(args, kwargs), task_group_id="g")
    task.resource_specification = spec
    return task


class Pool:
    """A started LocalEngine whose results and status updates land in queues."""

    def __init__(self, workers: int = 1):
        self.results: queue.Queue[ResultMessage] = queue.Queue()
        self.engine = LocalEngine(workers, self.results.put, lambda _: None, None)
        self.engine.start()

    def run(self, task: TaskMessage) -> ResultMessage:
        self.engine.submit(task)
        return self.result()

    def result(self) -> ResultMessage:
        return self.results.get(timeout=WAIT)

    def close(self) -> None:
        self.engine.shutdown()


def gone(pid: int) -> bool:
    """True once `pid` no longer runs (zombies count as gone)."""
    return not pid_alive(pid)


def read_pids(path: Path, count: int) -> list[int]:
    """The `count` pids a task wrote to `path`, one a line, once all are there."""
    def ready() -> list[int] | None:
        try:
            pids = [int(p) for p in path.read_text().split()]
        except (OSError, ValueError):
            return None
        return pids if len(pids) >= count else None

    return wait_for(ready, f"{count} pids in {path}", timeout=WAIT)


def kill_leftovers(pids: list[int]) -> None:
    """Clean up after a test that failed: never leave a sleeper behind on a shared host."""
    for pid in pids:
        try:
            os.kill(pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
