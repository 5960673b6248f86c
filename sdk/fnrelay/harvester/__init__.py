"""PanDA Harvester plugins that place Harvester workers (pilots) on fnrelay endpoints.

In a queue config (panda_queueconfig.json) name them by module and class::

    "submitter": {"module": "fnrelay.harvester.submitter", "name": "FnRelaySubmitter", ...}
    "monitor":   {"module": "fnrelay.harvester.monitor",   "name": "FnRelayMonitor", ...}
    "sweeper":   {"module": "fnrelay.harvester.sweeper",   "name": "FnRelaySweeper", ...}

See docs/harvester.md. The plugins subclass Harvester's PluginBase when it is importable and
work without Harvester too.
"""

from __future__ import annotations

from .monitor import FnRelayMonitor
from .submitter import FnRelaySubmitter
from .sweeper import FnRelaySweeper

__all__ = ["FnRelayMonitor", "FnRelaySubmitter", "FnRelaySweeper"]
