"""MPI launchers, one small class each, where CPU and GPU binding live.

Generic launchers (`Srun`, `OpenMPI`, `MPICH`, `PALS`, `Aprun`, `Flux`) take their settings from the
endpoint's config; site launchers (`Polaris`, `Frontier`) are generic ones with a centre's
documented defaults. Where nodes come from is the scheduler template's business.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fnrelay_wrappers.launchers.aprun import Aprun
from fnrelay_wrappers.launchers.base import Launcher
from fnrelay_wrappers.launchers.flux import Flux
from fnrelay_wrappers.launchers.mpich import MPICH, PALS
from fnrelay_wrappers.launchers.openmpi import OpenMPI
from fnrelay_wrappers.launchers.sites import Frontier, Polaris
from fnrelay_wrappers.launchers.srun import Srun
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token

#: Launcher names an endpoint config may choose.
LAUNCHERS: dict[str, type[Launcher]] = {
    cls.name: cls for cls in (Srun, OpenMPI, MPICH, PALS, Aprun, Flux, Polaris, Frontier)
}


def make_launcher(kind: str, **settings: Any) -> Launcher:
    """Launcher `kind` with `settings`: ValueError for an unknown kind or a bad value,
    TypeError for an unknown setting."""
    try:
        cls = LAUNCHERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown MPI launcher {kind!r} (known: {', '.join(sorted(LAUNCHERS))})"
        ) from None
    return cls(**settings)


def launcher_argv(kind: str, layout: Layout, options: str | Iterable[str] | None = None,
                  **settings: object) -> list[Token]:
    """The argv prefix of launcher `kind`; `settings` are that launcher's keyword options."""
    return make_launcher(kind, **settings).argv(layout, options)


__all__ = ["LAUNCHERS", "MPICH", "PALS", "Aprun", "Flux", "Frontier", "Launcher", "OpenMPI",
           "Polaris", "Srun", "launcher_argv", "make_launcher"]
