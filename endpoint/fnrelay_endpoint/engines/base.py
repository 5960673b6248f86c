"""The interface every engine (local pool, batch jobs, Parsl) offers the agent.

An engine runs tasks somewhere and reports through two callbacks, called from its own
threads: `on_status(StatusUpdate)` for non-terminal changes (e.g. running) and
`on_result(ResultMessage)` exactly once per submitted task that finishes or is cancelled.
Tasks lost to a shutdown report nothing: the agent's journal re-runs them at the next start.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fnrelay.errors import ConfigurationError
from fnrelay.wire import ExceptionInfo, ResultMessage, StatusUpdate, TaskMessage, TaskState

ResultCallback = Callable[[ResultMessage], None]
StatusCallback = Callable[[StatusUpdate], None]

#: Seconds a "running" update may be held back: a task that ends sooner sends only its result,
#: which carries its start time (one broker write per short task, not two).
RUNNING_HOLD = 0.05
#: The exception type of a task an engine refused for its resource_specification.
REFUSED_TYPE = "fnrelay_endpoint.ResourceSpecificationError"


class _OfTask(Protocol):
    """A task, or an engine's record of one (a batch job)."""
    task_id: str
    task_group_id: str | None


def failed_result(task: _OfTask, exc_type: str, message: str, *,
                  details: dict[str, Any] | None = None, traceback: str = "") -> ResultMessage:
    """A failed result that is no exception of the task's own code (a refusal, a lost worker,
    a failed batch job): `exc_type` names what went wrong."""
    return ResultMessage(
        task_id=task.task_id, status=TaskState.FAILED.value, task_group_id=task.task_group_id,
        exception=ExceptionInfo(type=exc_type, message=message, traceback=traceback),
        details=details or {})


def refused_result(task: TaskMessage, message: str) -> ResultMessage:
    """The failed result of a task refused before it ran (never retried: the task's doing)."""
    return failed_result(task, REFUSED_TYPE, message)


class Engine(abc.ABC):
    """Runs tasks; thread-safe; reports through callbacks."""

    #: Short name shown in heartbeats and endpoint metadata.
    name: str = "engine"
    #: The engine itself holds "running" updates for RUNNING_HOLD (the agent need not).
    holds_running: bool = False

    def __init__(self, on_result: ResultCallback, on_status: StatusCallback):
        self.on_result = on_result
        self.on_status = on_status

    @abc.abstractmethod
    def start(self) -> None:
        """Acquire resources (e.g. start warm workers)."""

    @abc.abstractmethod
    def submit(self, task: TaskMessage) -> None:
        """Queue `task`; returns at once."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> bool:
        """Cancel a queued or running task; True if it was known and a cancelled result follows."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop everything at once; unfinished tasks report nothing."""

    def info(self) -> dict[str, Any]:
        """Facts for heartbeats (engine name, worker count...)."""
        return {"engine": self.name}

    def backlog(self) -> int:
        """Tasks waiting for a free worker (approximate; 0 if the engine cannot tell)."""
        return 0

    @classmethod
    @abc.abstractmethod
    def validate_config(cls, config: dict[str, Any], source: str) -> dict[str, Any]:
        """Check the config's `engine` mapping; return it normalized (defaults filled in).
        Errors are ConfigurationError naming the key as `engine.<key>`."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict[str, Any], workdir: Path, on_result: ResultCallback,
                    on_status: StatusCallback) -> Engine:
        """Build the engine from a validated config."""


#: Engine type (the config's `engine.type`) -> module defining it as `ENGINE`. Imported only
#: when used, so a laptop endpoint never loads Parsl or the scheduler code.
ENGINE_MODULES = {
    "local": "fnrelay_endpoint.engines.local.engine",
    "batch": "fnrelay_endpoint.engines.batch.engine",
    "parsl": "fnrelay_endpoint.engines.parsl.engine",
}


def engine_class(kind: str, source: str = "config") -> type[Engine]:
    """The Engine subclass for `engine.type` = kind, or a clear error listing the known ones."""
    if kind not in ENGINE_MODULES:
        raise ConfigurationError(f"{source}: 'engine.type' must be one of "
                                 f"{', '.join(ENGINE_MODULES)}, got {kind!r}")
    return importlib.import_module(ENGINE_MODULES[kind]).ENGINE


def make_engine(engine_config: dict[str, Any], on_result: ResultCallback,
                on_status: StatusCallback, workdir: Path) -> Engine:
    """Build the engine named by `engine_config["type"]` (validated by EndpointConfig);
    `workdir` is the endpoint's own directory (sandboxes, run dirs)."""
    cls = engine_class(engine_config.get("type", "local"))
    return cls.from_config(engine_config, workdir, on_result, on_status)
