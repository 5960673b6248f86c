"""An Executor's task group at the broker: created on first use, attached to again when its
queue expired or its reader's password was reset.

The broker's answer (`info`) is read by the submitter (the direct-path grant, the AMQP URL) and
the watcher (the queue, the AMQP URL, who may send results); `attach` replaces it whole, so
readers never see half of one answer and half of another.
"""

from __future__ import annotations

from typing import Any

from fnrelay.executor.transport import BrokerApi


class TaskGroup:
    """The group's id, the broker's answer about it, and whether to ask for the direct path."""

    def __init__(self, api: BrokerApi, endpoint_id: str, task_group_id: str | None,
                 direct: bool):
        self._api, self.endpoint_id = api, endpoint_id
        self.id = task_group_id
        #: The broker's answer: task_group_id, amqp_url, queue, result_senders, submit (the
        #: direct-path grant or None). None until the group is attached.
        self.info: dict[str, Any] | None = None
        #: Ask for the direct path; cleared when it fails (REST from then on).
        self.direct = direct

    def attach(self) -> dict[str, Any]:
        """Create the group, or re-attach to it, asking for the direct path if wanted."""
        info = self._api.create_task_group(self.id, self.endpoint_id if self.direct else None)
        self.info, self.id = info, info["task_group_id"]
        return info
