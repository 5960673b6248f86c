"""An Executor's task group at the broker: created on first use, attached to again when its
queue expired or its reader's password was reset.

The broker's answer (`info`) is read by the submitter (the direct-path grant, the AMQP URL) and
the watcher (the queue, the AMQP URL, who may send results); `attach` replaces it whole, so
readers never see half of one answer and half of another.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fnrelay.amqp import join_urls, split_urls
from fnrelay.executor.transport import BrokerApi


class TaskGroup:
    """The group's id, the broker's answer about it, and whether to ask for the direct path.

    `endpoint_id` is the endpoint the direct path is asked for: the one the first send goes
    to (an Executor's endpoint may be set, or changed, after it was made, as in Globus
    Compute); tasks for any other endpoint go over REST. `amqp_port`, when set, replaces the
    port of the result stream's URL (Globus Compute's ``Executor(amqp_port=...)``).
    """

    def __init__(self, api: BrokerApi, endpoint_id: str | None, task_group_id: str | None,
                 direct: bool, amqp_port: int | None = None):
        self._api, self.endpoint_id = api, endpoint_id
        self.id = task_group_id
        #: The broker's answer: task_group_id, amqp_url, queue, result_senders, submit (the
        #: direct-path grant or None). None until the group is attached.
        self.info: dict[str, Any] | None = None
        #: Ask for the direct path; cleared when it fails (REST from then on).
        self.direct = direct
        self.amqp_port = amqp_port

    def attach(self) -> dict[str, Any]:
        """Create the group, or re-attach to it, asking for the direct path if wanted."""
        endpoint = self.endpoint_id if self.direct else None
        info = self._api.create_task_group(self.id, endpoint)
        self.info, self.id = info, info["task_group_id"]
        return info

    def result_url(self) -> str:
        """The AMQP URL the result stream connects to."""
        assert self.info is not None  # the watcher starts once the group is attached
        return with_port(self.info["amqp_url"], self.amqp_port)


def with_port(url: str, port: int | None) -> str:
    """`url` (each of a list) with its port replaced by `port` (None: unchanged); user and
    password kept."""
    if port is None:
        return url
    return join_urls([_one_with_port(u, port) for u in split_urls(url) or [url]])


def _one_with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))
