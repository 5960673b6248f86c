"""Harvester sweeper plugin: kill a worker's task and clean its access point.

Killing cancels the fnrelay task: a queued task never runs; a running one is killed by its
endpoint (with scancel on a batch engine). Cleaning deletes the access point directory, and
only one inside the configured ``accessPointBase``: a stray or hostile accessPoint such as ``/``
or ``../..`` is refused, never removed.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from fnrelay.errors import BrokerUnavailableError, FnRelayError, NotFoundError

from .common import FnRelayPlugin, access_point, short

Outcome = tuple[bool, str]


class FnRelaySweeper(FnRelayPlugin):
    """Kill and clean workers submitted by FnRelaySubmitter.

    Queue config keys: ``accessPointBase`` (the directory every access point lives under;
    required for sweep_worker to delete anything), plus FnRelayPlugin's ``broker_url``,
    ``token``, ``max_retries``.
    """

    accessPointBase: str | None = None

    def kill_worker(self, workspec: Any) -> Outcome:
        """Cancel the worker's task: (True, '') once it is cancelled or already over."""
        task_id = workspec.batchID
        if not task_id:
            return True, "worker has no batchID: nothing to kill"
        try:
            status = self.client.cancel(task_id)
        except NotFoundError:
            return True, f"fnrelay task {task_id} is unknown to the broker: nothing to kill"
        except BrokerUnavailableError as e:
            return False, short(f"cannot cancel fnrelay task {task_id}, will retry: {e}")
        except FnRelayError as e:
            return False, short(f"cannot cancel fnrelay task {task_id}: {e}")
        return True, "" if status == "cancelled" else f"fnrelay task {task_id} already {status}"

    def kill_workers(self, workspec_list: list[Any]) -> list[Outcome]:
        """kill_worker for each worker, in order."""
        return [self.kill_worker(w) for w in workspec_list]

    def sweep_worker(self, workspec: Any) -> Outcome:
        """Delete the worker's access point directory (only inside accessPointBase)."""
        try:
            path = access_point(workspec)
        except ValueError as e:
            return True, str(e)
        refusal = self._refusal(path)
        if refusal:
            return False, refusal
        if os.path.islink(path):
            os.unlink(path)  # the link, never what it points to
        elif os.path.isdir(path):
            try:
                shutil.rmtree(path)
            except OSError as e:
                return False, short(f"cannot remove access point {path}: {e}")
        elif os.path.exists(path):
            return False, f"access point {path} is not a directory; not removed"
        else:
            return True, "access point already removed"
        return True, ""

    def _refusal(self, path: str) -> str | None:
        """Why ``path`` must not be deleted, or None when it lies strictly inside the base."""
        if not self.accessPointBase:
            return ("queue config 'accessPointBase' is not set: refusing to delete "
                    f"access point {path}")
        base = os.path.realpath(self.accessPointBase)
        parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        target = os.path.join(parent, os.path.basename(os.path.abspath(path)))
        if os.path.commonpath([base, target]) != base or target == base:
            return f"access point {path} is not inside accessPointBase {base}: not removed"
        return None
