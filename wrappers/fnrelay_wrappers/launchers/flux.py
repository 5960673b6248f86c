"""Flux's ``flux run`` inside a Flux instance (a ``flux batch`` job): ``-N`` nodes, ``-n``
tasks, ``-c`` cores and ``-g`` GPUs per task (flux-run(1), flux-core 0.6x); Flux binds the
cores and GPUs it gives each task itself."""

from __future__ import annotations

from fnrelay_wrappers.launchers.base import Launcher
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token


class Flux(Launcher):
    name = "flux"

    def _argv(self, layout: Layout) -> list[Token]:
        argv: list[Token] = ["flux", "run", "-N", str(layout.num_nodes), "-n",
                             str(layout.num_ranks)]
        if layout.cores_per_rank:
            argv += ["-c", str(layout.cores_per_rank)]
        if layout.gpus_per_node:
            argv += ["-g", str(max(1, layout.gpus_per_node // layout.ranks_per_node))]
        return argv
