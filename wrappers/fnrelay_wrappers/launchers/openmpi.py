"""OpenMPI's ``mpiexec``: ranks per node through ``--map-by ppr:N:node``, cores through ``PE``."""

from __future__ import annotations

from fnrelay_wrappers.launchers.base import HostSource, Launcher, host_source, one_word
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token


class OpenMPI(Launcher):
    name = "openmpi"

    def __init__(self, *, oversubscribe: bool = False, allow_run_as_root: bool = False,
                 hostfile: HostSource = None, bind_to: str | None = None,
                 **common: object) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        for key, value in (("oversubscribe", oversubscribe),
                           ("allow_run_as_root", allow_run_as_root)):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, not {value!r}")
        self.oversubscribe, self.allow_run_as_root = oversubscribe, allow_run_as_root
        self.hostfile = host_source(hostfile)
        self.bind_to = one_word(bind_to, "bind_to")

    def _argv(self, layout: Layout) -> list[Token]:
        mapping = f"ppr:{layout.ranks_per_node}:node"
        if layout.cores_per_rank and layout.cores_per_rank > 1:
            mapping += f":PE={layout.cores_per_rank}"
        argv: list[Token] = ["mpiexec", "-n", str(layout.num_ranks), "--map-by", mapping]
        if self.bind_to:
            argv += ["--bind-to", self.bind_to]
        if self.hostfile is not None:
            argv += ["--hostfile", self.hostfile]
        if self.oversubscribe:
            argv.append("--oversubscribe")
        if self.allow_run_as_root:
            argv.append("--allow-run-as-root")
        return argv
