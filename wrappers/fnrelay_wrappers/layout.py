"""The layout of one task's ranks: how many run on how many nodes, with what cores and GPUs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """How many ranks run where; `None` leaves the choice to the launcher."""

    num_nodes: int = 1
    ranks_per_node: int = 1
    num_ranks: int = 1
    cores_per_rank: int | None = None
    gpus_per_node: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_nodes", "ranks_per_node", "num_ranks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        for name in ("cores_per_rank", "gpus_per_node"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, not {value!r}")

    @property
    def gpus_per_rank(self) -> int:
        """GPUs each rank gets when a node's GPUs are shared out evenly (0: none or too few)."""
        return (self.gpus_per_node or 0) // self.ranks_per_node
