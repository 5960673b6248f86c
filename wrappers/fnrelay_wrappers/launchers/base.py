"""What every MPI launcher shares: settings checked once, a host list, and the affinity step.

A launcher turns a `Layout` into the argv prefix that starts a command as N ranks on the nodes
a job already holds. Its settings come from the endpoint's config (the admin's), so they are
checked when the config is read: an unknown setting is a TypeError from ``__init__``, a bad
value a ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fnrelay_wrappers.launchers.affinity import VENDORS, gpu_affinity_argv
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import EnvRef, Token, Word, expand_refs, option_tokens

HostSource = str | EnvRef | Word | None


def host_source(value: HostSource, what: str = "hostfile") -> HostSource:
    """A hostfile from config: a path, or a variable of the job (``$PBS_NODEFILE``)."""
    if value is None or isinstance(value, (EnvRef, Word)):
        return value
    if not isinstance(value, str) or not value or "\n" in value:
        raise ValueError(f"{what} must be a path or '$VARIABLE', not {value!r}")
    return expand_refs(value)


def one_word(value: str | None, what: str) -> str | None:
    """A binding keyword such as ``depth``, ``cores`` or ``list:0-7:8-15`` (no spaces)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be one word such as 'cores', not {value!r}")
    return value


class Launcher:
    """Base class; subclasses set `name` and build `_argv`."""

    name: ClassVar[str] = ""

    def __init__(self, *, gpu_affinity: bool = False, gpu_vendor: str = "nvidia",
                 gpu_order: str = "forward") -> None:
        if not isinstance(gpu_affinity, bool):
            raise ValueError(f"gpu_affinity must be true or false, not {gpu_affinity!r}")
        if gpu_vendor not in VENDORS:
            raise ValueError(f"gpu_vendor must be one of {', '.join(VENDORS)}, not "
                             f"{gpu_vendor!r}")
        if gpu_order not in ("forward", "reverse"):
            raise ValueError(f"gpu_order must be 'forward' or 'reverse', not {gpu_order!r}")
        self.gpu_affinity, self.gpu_vendor, self.gpu_order = gpu_affinity, gpu_vendor, gpu_order

    def argv(self, layout: Layout, options: str | Iterable[str] | None = None) -> list[Token]:
        """Launcher, its binding flags, the admin's options, then the GPU-affinity step."""
        argv = [*self._argv(layout), *option_tokens(options)]
        if self.gpu_affinity and layout.gpus_per_rank:
            argv += gpu_affinity_argv(layout, self.gpu_vendor, self.gpu_order)
        return argv

    def _argv(self, layout: Layout) -> list[Token]:
        raise NotImplementedError
