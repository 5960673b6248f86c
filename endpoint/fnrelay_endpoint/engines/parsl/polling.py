"""How the parsl engine's providers ask their scheduler about their blocks.

Parsl's strategy sizes the blocks by what its provider last heard. Two of its defaults leave a
pilot that is gone counted as capacity: a Slurm or PBS Pro provider asks every 60 s, and a
Slurm provider asking `squeue` (a cluster without accounting, so no `sacct`) never learns
that a block has ended once slurmctld has forgotten it (below). `polled` adapts a provider for
both, in a subclass of its own class, so it stays an instance of what the config named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: squeue's error, exit code 1, when slurmctld knows none of the jobs it was asked about.
SQUEUE_FORGOT = "Invalid job id specified"

ExecuteWait = Callable[..., tuple[int, str, str]]


def polled(provider: Any, period: float | None) -> Any:
    """`provider`, asking its scheduler every `period` s (None: Parsl's own period), and
    reading squeue's "no such job" as the answer it is."""
    attrs: dict[str, Any] = {}
    if period is not None:
        attrs["status_polling_interval"] = property(lambda self: period)
    if asks_squeue(provider):
        attrs["execute_wait"] = forgotten_jobs_are_gone(type(provider).execute_wait)
    if attrs:
        provider.__class__ = type(type(provider).__name__, (type(provider),), attrs)
    return provider


def asks_squeue(provider: Any) -> bool:
    """Is `provider` a Slurm provider that polls with squeue (Parsl takes sacct if it works)?"""
    from parsl.providers import SlurmProvider

    return (isinstance(provider, SlurmProvider)
            and str(getattr(provider, "_cmd", "")).lstrip().startswith("squeue"))


def forgotten_jobs_are_gone(execute_wait: ExecuteWait) -> ExecuteWait:
    """`execute_wait` for a provider polling with squeue: an answer of SQUEUE_FORGOT is an
    empty listing.

    Parsl counts a block that squeue does not list as completed. But once slurmctld has
    forgotten every job of a poll (MinJobAge after they end, 300 s by default, or a
    controller restart), squeue exits 1 with SQUEUE_FORGOT instead of listing nothing; Parsl
    takes that for a failed poll and keeps the blocks' last state, running, for ever, so its
    strategy never replaces a pilot that was scancelled or failed between two polls, and the
    tasks wait (Parsl issue #1588, open). Other failures (slurmctld unreachable) stay
    failures: the blocks keep their state until a poll answers.
    """
    def execute_wait_(self: Any, cmd: str, *args: Any, **kwargs: Any) -> tuple[int, str, str]:
        retcode, stdout, stderr = execute_wait(self, cmd, *args, **kwargs)
        if (retcode != 0 and cmd.lstrip().startswith("squeue")
                and SQUEUE_FORGOT in (stderr or "")):
            return 0, "", ""
        return retcode, stdout, stderr
    return execute_wait_
