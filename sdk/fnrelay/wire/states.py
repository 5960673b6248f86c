"""A task's lifecycle: its states and the transitions between them, as on the wire."""

from __future__ import annotations

import enum


class TaskState(str, enum.Enum):
    """Lifecycle of a task. Transitions allowed are in TRANSITIONS."""

    RECEIVED = "received"
    WAITING_FOR_ENDPOINT = "waiting-for-endpoint"
    WAITING_FOR_NODES = "waiting-for-nodes"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:  # so f-strings and JSON show the wire value
        return self.value


TERMINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED})
#: The same as wire values (database columns, JSON): what a task's status string is compared to.
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATES)

_S = TaskState
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _S.RECEIVED: frozenset({_S.WAITING_FOR_ENDPOINT, _S.FAILED, _S.CANCELLED}),
    # A result may overtake the endpoint's "running" update, so terminal states are reachable
    # from every live state. Going back to waiting-for-endpoint is a retry.
    _S.WAITING_FOR_ENDPOINT: frozenset(
        {_S.WAITING_FOR_NODES, _S.RUNNING, _S.SUCCESS, _S.FAILED, _S.CANCELLED}
    ),
    _S.WAITING_FOR_NODES: frozenset(
        {_S.RUNNING, _S.WAITING_FOR_ENDPOINT, _S.SUCCESS, _S.FAILED, _S.CANCELLED}
    ),
    _S.RUNNING: frozenset({_S.WAITING_FOR_ENDPOINT, _S.SUCCESS, _S.FAILED, _S.CANCELLED}),
    _S.SUCCESS: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}


def can_transition(old: TaskState | str, new: TaskState | str) -> bool:
    """True if a task in state `old` may move to `new`."""
    return TaskState(new) in TRANSITIONS[TaskState(old)]
