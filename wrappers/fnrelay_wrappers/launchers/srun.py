"""Slurm's ``srun`` inside an allocation: it needs no host list, and binds CPUs and GPUs itself.

Since Slurm 22.05 srun no longer inherits ``--cpus-per-task`` from the job, so it is passed per
step. With GPUs shared out evenly, ``--gpus-per-task`` (and ``--gpu-bind`` when set, e.g.
``closest`` on Frontier) gives each rank its own; otherwise every rank gets the node's GPUs.
"""

from __future__ import annotations

from fnrelay_wrappers.launchers.base import Launcher, one_word
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token


class Srun(Launcher):
    name = "srun"

    def __init__(self, *, cpu_bind: str | None = None, gpu_bind: str | None = None,
                 **common: object) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        self.cpu_bind = one_word(cpu_bind, "cpu_bind")
        self.gpu_bind = one_word(gpu_bind, "gpu_bind")

    def _argv(self, layout: Layout) -> list[Token]:
        argv: list[Token] = ["srun", "-N", str(layout.num_nodes), "-n", str(layout.num_ranks),
                             f"--ntasks-per-node={layout.ranks_per_node}"]
        if layout.cores_per_rank:
            argv.append(f"--cpus-per-task={layout.cores_per_rank}")
        if self.cpu_bind:
            argv.append(f"--cpu-bind={self.cpu_bind}")
        if layout.gpus_per_rank and layout.gpus_per_node == \
                layout.gpus_per_rank * layout.ranks_per_node:
            argv.append(f"--gpus-per-task={layout.gpus_per_rank}")
            if self.gpu_bind:
                argv.append(f"--gpu-bind={self.gpu_bind}")
        elif layout.gpus_per_node:
            argv.append(f"--gpus-per-node={layout.gpus_per_node}")
        return argv
