"""Cray ALPS ``aprun``: ``-n`` total, ``-N`` per node, ``-d`` cores per rank bound by depth."""

from __future__ import annotations

from fnrelay_wrappers.launchers.base import Launcher, one_word
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token


class Aprun(Launcher):
    name = "aprun"

    def __init__(self, *, cpu_bind: str | None = "depth", **common: object) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        self.cpu_bind = one_word(cpu_bind, "cpu_bind")

    def _argv(self, layout: Layout) -> list[Token]:
        argv: list[Token] = ["aprun", "-n", str(layout.num_ranks), "-N",
                             str(layout.ranks_per_node)]
        if layout.cores_per_rank:
            argv += ["-d", str(layout.cores_per_rank)]
            if self.cpu_bind:
                argv += ["-cc", self.cpu_bind]
        return argv
