"""The launch chain: launcher ∘ container ∘ conda ∘ command.

A `LaunchChain` holds already-built argv prefixes and gives them to the job in three shapes:
the MPI prefix a command is appended to (exported as ``FNRELAY_MPI_PREFIX`` so that
``MPIFunction`` can use it, and as ``PARSL_MPI_PREFIX``, which Globus Compute's MPIFunction
reads), the environment exports, and the full command line of a job body.

The order is fixed: the launcher starts ranks on the allocated nodes (it must run on the host),
each rank enters the container, then the conda env, then runs the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fnrelay.wire.names import (
    ENV_MPI_PREFIX,
    ENV_NUM_NODES,
    ENV_NUM_RANKS,
    ENV_PARSL_MPI_PREFIX,
    ENV_TASK_SANDBOX,
)
from fnrelay_wrappers import shell
from fnrelay_wrappers.conda import CondaEnv
from fnrelay_wrappers.container import Bind, container_argv
from fnrelay_wrappers.mpi import Layout, launcher_argv
from fnrelay_wrappers.prelude import module_lines, pre_exec_lines
from fnrelay_wrappers.shell import Token


@dataclass(frozen=True)
class LaunchChain:
    """How one task's command starts; build with `build_chain` or from parts."""

    sandbox: str
    layout: Layout = field(default_factory=Layout)
    launcher: tuple[Token, ...] = ()
    container: tuple[Token, ...] = ()
    conda: tuple[Token, ...] = ()
    prelude: tuple[str, ...] = ()

    def prefix_argv(self, launch: bool = True, wrap: bool = True) -> list[Token]:
        """launcher (if `launch`) + container and conda (if `wrap`), as argv tokens."""
        inner = (*self.container, *self.conda) if wrap else ()
        return [*(self.launcher if launch else ()), *inner]

    def mpi_prefix(self) -> str:
        """The shell text an MPI command is appended to ('' without a launcher)."""
        return shell.join(self.prefix_argv()) if self.launcher else ""

    def env(self) -> dict[str, str]:
        """Variables exported for the command; the MPI prefixes only with a launcher."""
        env = {}
        if self.launcher:
            env[ENV_MPI_PREFIX] = env[ENV_PARSL_MPI_PREFIX] = self.mpi_prefix()
        env[ENV_NUM_RANKS] = str(self.layout.num_ranks)
        env[ENV_NUM_NODES] = str(self.layout.num_nodes)
        env[ENV_TASK_SANDBOX] = self.sandbox
        return env

    def export_lines(self) -> list[str]:
        return shell.export_lines(self.env())

    def command_line(self, command: Sequence[str], launch: bool = True, wrap: bool = True) -> str:
        """The full, quoted command line: prefix then `command` (an argv list).

        ``launch=False`` leaves the launcher out: a Python function's worker runs once and
        starts ranks itself through FNRELAY_MPI_PREFIX if needed. ``wrap=False`` also leaves
        out container and conda: a worker that starts MPI ranks must run on the host, where
        the launcher is, since each rank enters the container through the prefix.
        """
        if isinstance(command, str) or not command:
            raise ValueError("command must be a non-empty argv list, not a shell string")
        return shell.join([*self.prefix_argv(launch, wrap), *command])


def build_chain(sandbox: str, layout: Layout, *, launcher: str | None = None,
                launcher_options: str | Sequence[str] | None = None,
                launcher_settings: dict | None = None,
                container: dict | None = None, conda: dict | None = None,
                modules: Sequence[str] | None = None,
                pre_exec: str | Sequence[str] | None = None) -> LaunchChain:
    """Compose a chain from plain values (already validated by the resource specification).

    `container` is ``{"type", "image", "binds"?, "options"?}``, `conda` is ``{"env"}`` or
    ``{"prefix"}``; `launcher_settings` are keyword options of the launcher (e.g.
    ``{"oversubscribe": True}`` for openmpi).
    """
    shell.quote(sandbox)  # type check
    launch: tuple[Token, ...] = ()
    if launcher is not None:
        launch = tuple(launcher_argv(launcher, layout, launcher_options,
                                     **(launcher_settings or {})))
    box: tuple[Token, ...] = ()
    if container:
        binds = [b if isinstance(b, Bind) else Bind.parse(b) for b in container.get("binds", ())]
        box = tuple(container_argv(container["type"], container["image"], binds, sandbox,
                                   container.get("options")))
    env: tuple[Token, ...] = ()
    if conda:
        env = tuple(CondaEnv(env=conda.get("env"), prefix=conda.get("prefix")).run_argv())
    prelude = tuple(module_lines(modules) + pre_exec_lines(pre_exec))
    return LaunchChain(sandbox=sandbox, layout=layout, launcher=launch, container=box,
                       conda=env, prelude=prelude)
