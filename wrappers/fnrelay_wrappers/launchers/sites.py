"""Launchers of particular machines: a site's documented defaults on top of a generic launcher.

Each follows the centre's user guide, so an endpoint there says ``launcher: polaris`` instead of
repeating the binding recipe (as Balsam keeps one small launcher class per platform).
"""

from __future__ import annotations

from fnrelay_wrappers.launchers.mpich import PALS
from fnrelay_wrappers.launchers.srun import Srun


class Polaris(PALS):
    """ALCF Polaris (PBS Pro, Cray PALS, 4 NVIDIA A100 per node): ranks bound by depth, GPUs
    handed out last-first, as ALCF's set_affinity_gpu_polaris.sh does, because GPU 3 sits
    next to the first CPU cores."""

    name = "polaris"

    def __init__(self, **settings: object) -> None:
        settings.setdefault("gpu_order", "reverse")
        super().__init__(**settings)  # type: ignore[arg-type]


class Frontier(Srun):
    """OLCF Frontier (Slurm, 4 AMD MI250X = 8 GCDs per node): ``--gpus-per-task`` with
    ``--gpu-bind=closest``, as the Frontier user guide's examples do."""

    name = "frontier"

    def __init__(self, **settings: object) -> None:
        settings.setdefault("gpu_bind", "closest")
        super().__init__(**settings)  # type: ignore[arg-type]
