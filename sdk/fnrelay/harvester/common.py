"""What the three plugins share: Harvester's plugin base, the broker client, worker paths.

Harvester builds a plugin with the queue config's keys as keyword arguments and expects them as
attributes (``PluginBase.__init__(**kwarg)``). Inside Harvester we subclass its own PluginBase
so its logger helpers work; without Harvester a local base does the same assignment.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

try:  # pragma: no cover - depends on whether Harvester is installed
    from pandaharvester.harvestercore.plugin_base import PluginBase as _HarvesterBase
except ImportError:  # pragma: no cover
    _HarvesterBase = None

if TYPE_CHECKING:
    from fnrelay.client import Client


class _LocalPluginBase:
    """Harvester's PluginBase contract: every keyword argument becomes an attribute."""

    def __init__(self, **kwarg: Any) -> None:
        for key, value in kwarg.items():
            setattr(self, key, value)


if TYPE_CHECKING:  # Harvester's class is not typed; the local one states its contract
    PluginBase = _LocalPluginBase
else:
    PluginBase = _HarvesterBase or _LocalPluginBase

#: Worker statuses, as WorkSpec spells them (plugins must not need Harvester to import).
ST_SUBMITTED = "submitted"
ST_RUNNING = "running"
ST_FINISHED = "finished"
ST_FAILED = "failed"
ST_CANCELLED = "cancelled"


class FnRelayPlugin(PluginBase):
    """Base of the fnrelay plugins: queue config attributes plus one lazily made Client.

    Config keys read here: ``broker_url`` and ``token`` (else FNRELAY_BROKER_URL /
    FNRELAY_TOKEN, else the ``fnrelay login`` file) and ``max_retries`` (HTTP retries of one
    call; Harvester retries whole cycles anyway, so a small number keeps a cycle short).
    """

    broker_url: str | None = None
    token: str | None = None
    max_retries: int | None = None

    def __init__(self, **kwarg: Any) -> None:
        self._client: Client | None = None
        PluginBase.__init__(self, **kwarg)

    @property
    def client(self) -> Any:
        """The broker client of this plugin (made on first use, so config errors surface in a
        call's result rather than at construction)."""
        if self._client is None:
            from fnrelay.client import Client

            client = Client(self.broker_url, self.token)
            if self.max_retries is not None:
                client.retry_config.max_retries = int(self.max_retries)
            self._client = client
        return self._client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value


def access_point(workspec: Any) -> str:
    """The worker's access point with Harvester's ${...} placeholders resolved."""
    if not workspec.accessPoint:
        raise ValueError(f"worker {workspec.workerID} has no accessPoint")
    getter = getattr(workspec, "get_access_point", None)
    return str(getter() if callable(getter) else workspec.accessPoint)


def log_paths(workspec: Any) -> tuple[str, str]:
    """(stdout, stderr) files of a worker in its access point.

    The names carry the worker id because Harvester uploads log files under their basename.
    """
    base = access_point(workspec)
    stem = f"fnrelay-{workspec.workerID}"
    return os.path.join(base, stem + ".out"), os.path.join(base, stem + ".err")


def short(text: Any, limit: int = 500) -> str:
    """A one-line diagnostic no longer than WorkSpec.diagMessage (500 characters)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
