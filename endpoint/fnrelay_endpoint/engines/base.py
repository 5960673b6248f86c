"""The interface every engine (local pool, batch jobs, Parsl) offers the agent.

An engine runs tasks somewhere and reports through two callbacks, called from its own
threads: `on_status(StatusUpdate)` for non-terminal changes (e.g. running) and
`on_result(ResultMessage)` exactly once per submitted task that finishes or is cancelled.
Tasks lost to a shutdown report nothing: the agent's journal re-runs them at the next start.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from fnrelay.errors import ConfigurationError
from fnrelay.protocol import ResultMessage, StatusUpdate, TaskMessage

ResultCallback = Callable[[ResultMessage], None]
StatusCallback = Callable[[StatusUpdate], None]


class Engine(abc.ABC):
    """Runs tasks; thread-safe; reports through callbacks."""

    #: Short name shown in heartbeats and endpoint metadata.
    name: str = "engine"

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


def make_engine(engine_config: dict[str, Any], on_result: ResultCallback,
                on_status: StatusCallback) -> Engine:
    """Build the engine named by `engine_config["type"]` (validated by EndpointConfig)."""
    kind = engine_config.get("type", "local")
    if kind == "local":
        from fnrelay_endpoint.engines.local import LocalEngine

        return LocalEngine(int(engine_config["max_workers"]), on_result, on_status)
    raise ConfigurationError(f"unknown engine type {kind!r} (known: local)")
