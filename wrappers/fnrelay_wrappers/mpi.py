"""MPI launch in one import: the `Layout` and the launchers (see `fnrelay_wrappers.launchers`).

The functions keep the call style ``srun(layout, options)`` for code that builds one argv.
"""

from __future__ import annotations

from collections.abc import Iterable

from fnrelay_wrappers.launchers import LAUNCHERS, launcher_argv, make_launcher
from fnrelay_wrappers.launchers.base import HostSource
from fnrelay_wrappers.layout import Layout
from fnrelay_wrappers.shell import Token

Options = str | Iterable[str] | None


def srun(layout: Layout, options: Options = None, **settings: object) -> list[Token]:
    return launcher_argv("srun", layout, options, **settings)


def openmpi(layout: Layout, options: Options = None, **settings: object) -> list[Token]:
    return launcher_argv("openmpi", layout, options, **settings)


def mpich(layout: Layout, options: Options = None, **settings: object) -> list[Token]:
    return launcher_argv("mpich", layout, options, **settings)


def pals(layout: Layout, options: Options = None, **settings: object) -> list[Token]:
    return launcher_argv("pals", layout, options, **settings)


def aprun(layout: Layout, options: Options = None, **settings: object) -> list[Token]:
    return launcher_argv("aprun", layout, options, **settings)


def flux(layout: Layout, options: Options = None, **settings: object) -> list[Token]:
    return launcher_argv("flux", layout, options, **settings)


__all__ = ["LAUNCHERS", "HostSource", "Layout", "aprun", "flux", "launcher_argv",
           "make_launcher", "mpich", "openmpi", "pals", "srun"]
