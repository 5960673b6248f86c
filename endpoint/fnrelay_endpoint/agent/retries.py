"""Retries on infrastructure failure: which results are retried, how often, and what the user
sees when the limit is reached.

A task's run is lost to infrastructure when its worker process dies (signal, OOM killer), the
endpoint stops while it runs (crash, kill, restart) or its batch job ends in NODE_FAIL /
PREEMPTED (engines mark those results with ``details["infrastructure"] = True``). The agent
re-runs such a task up to `max_retries` times: the task's own (``TaskMessage.max_retries``,
from the submit request), else the endpoint's.
A task's own exception, a walltime kill and a cancel are answers, never retried.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fnrelay.wire import MAX_RETRIES_CAP, ResultMessage, TaskMessage, TaskState, now


def max_retries(task: TaskMessage, default: int) -> int:
    """The retry limit of `task`: its own (when valid) else the endpoint's `default`."""
    value = task.max_retries
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_RETRIES_CAP)
    return default


def for_engine(task: TaskMessage, failures: int = 0) -> TaskMessage:
    """The task as engines see it: with its attempt number."""
    if task.attempt == failures + 1:
        return task
    return dataclasses.replace(task, attempt=failures + 1)


def is_infrastructure(result: ResultMessage) -> bool:
    """True for a failure the task did not cause (its run was lost), so a retry may help."""
    return (result.status == TaskState.FAILED.value
            and (result.details or {}).get("infrastructure") is True)


def reason_of(result: ResultMessage) -> str:
    details = result.details or {}
    if isinstance(details.get("reason"), str):
        return details["reason"]
    if result.exception is not None:
        return result.exception.message.splitlines()[0] if result.exception.message else ""
    return "infrastructure failure"


def gave_up(result: ResultMessage, failures: int, limit: int) -> ResultMessage:
    """The final failure after `failures` lost runs: says why and how often it was tried."""
    from fnrelay_endpoint.worker import exception_info

    note = (f"gave up after {failures} attempt(s) lost to infrastructure failures "
            f"(max_retries={limit}); last: {reason_of(result)}")
    info = exception_info(RetriesExhaustedError(note))
    if result.exception is not None and result.exception.traceback:
        info.traceback = f"{result.exception.traceback}\n{info.traceback}"
    details: dict[str, Any] = {**(result.details or {}), "attempts": failures,
                               "max_retries": limit, "gave_up": note}
    return dataclasses.replace(result, exception=info, details=details)


def interrupted(task: TaskMessage, failures: int, limit: int) -> ResultMessage:
    """The final failure of a task whose runs kept dying with the endpoint (a poison task)."""
    from fnrelay_endpoint.worker import exception_info

    message = (f"the endpoint stopped {failures} time(s) while running this task "
               f"(max_retries={limit}): it may crash its endpoint, so it is not run again")
    return ResultMessage(
        task_id=task.task_id, status=TaskState.FAILED.value, task_group_id=task.task_group_id,
        exception=exception_info(PoisonTaskError(message)),
        details={"infrastructure": True, "attempts": failures, "max_retries": limit,
                 "gave_up": message, "completed": now()},
    )


class RetriesExhaustedError(RuntimeError):
    """A task's runs were lost to infrastructure failures more often than max_retries."""


class PoisonTaskError(RetriesExhaustedError):
    """A task whose runs kept taking its endpoint down."""
