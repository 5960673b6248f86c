"""MPICH's Hydra ``mpiexec`` and Cray PALS ``mpiexec`` (HPE Cray EX, e.g. ALCF's Polaris).

Both take ``-n`` total and ranks per node, but bind differently: Hydra with
``-bind-to core:N``, PALS with ``--depth=N --cpu-bind depth`` (ranks spaced N cores apart,
each rank's OpenMP threads on those cores). PALS leaves GPUs to the program, so its ranks get
the GPU-affinity step by default whenever GPUs are shared out.
"""

from __future__ import annotations

from collections.abc import Iterable

from fnrelay_wrappers.launchers.base import HostSource, Launcher, host_source, one_word
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token


class MPICH(Launcher):
    name = "mpich"

    def __init__(self, *, hostfile: HostSource = None, hosts: Iterable[str] | None = None,
                 bind_to: str | None = "core", **common: object) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        self.hosts = [h for h in hosts] if hosts is not None else []
        if any(not isinstance(h, str) or not h or "," in h or h.isspace() for h in self.hosts):
            raise ValueError(f"hosts must be host names, not {hosts!r}")
        self.hostfile = host_source(hostfile)
        if self.hostfile is not None and self.hosts:
            raise ValueError("give either hostfile or hosts, not both")
        self.bind_to = one_word(bind_to, "bind_to")

    def _hosts(self) -> list[Token]:
        if self.hostfile is not None:
            return ["--hostfile", self.hostfile]
        return ["-hosts", ",".join(self.hosts)] if self.hosts else []

    def _argv(self, layout: Layout) -> list[Token]:
        argv: list[Token] = ["mpiexec", "-n", str(layout.num_ranks), "-ppn",
                             str(layout.ranks_per_node), *self._hosts()]
        if layout.cores_per_rank and self.bind_to:
            argv += ["-bind-to", f"{self.bind_to}:{layout.cores_per_rank}"]
        return argv


class PALS(MPICH):
    """Cray PALS; `cpu_bind` is ``depth`` by default, or e.g. ``list:0:8:16:24``."""

    name = "pals"

    def __init__(self, *, cpu_bind: str | None = "depth", gpu_affinity: bool = True,
                 **settings: object) -> None:
        super().__init__(gpu_affinity=gpu_affinity, **settings)  # type: ignore[arg-type]
        self.cpu_bind = one_word(cpu_bind, "cpu_bind")

    def _argv(self, layout: Layout) -> list[Token]:
        argv: list[Token] = ["mpiexec", "-n", str(layout.num_ranks), "--ppn",
                             str(layout.ranks_per_node), *self._hosts()]
        if layout.cores_per_rank:
            argv.append(f"--depth={layout.cores_per_rank}")
        if self.cpu_bind and (layout.cores_per_rank or self.cpu_bind != "depth"):
            argv += ["--cpu-bind", self.cpu_bind]
        return argv
