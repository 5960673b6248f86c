"""The launch chain: launcher ∘ container ∘ conda ∘ command.

A `LaunchChain` holds already-built argv prefixes and gives them to the job in three shapes:
the MPI prefix a command is appended to (exported as ``FNRELAY_MPI_PREFIX`` so that
``MPIFunction`` can use it, and as ``PARSL_MPI_PREFIX``, which Globus Compute's MPIFunction
reads), the environment exports, and the full command line of a job body.

The order is fixed: the launcher starts ranks on the allocated nodes (it must run on the host),
each rank enters the container, then the conda env, then runs the command. Without a container
the conda env is activated once, in the job's set-up (`prelude`), and is no part of the prefix.

A Python worker in an env or an image runs that env's or image's ``python3`` (`interpreter`),
never the endpoint's absolute path, which does not exist inside an image and would not see the
env's packages: fnrelay and dill must be installed there (docs/hpc.md).
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
from fnrelay_wrappers.launchers import launcher_argv
from fnrelay_wrappers.layout import Layout
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
    #: The Python inside the conda env or image; None: the worker uses the endpoint's own.
    python: str | None = None

    def interpreter(self, host_python: str, wrap: bool = True) -> str:
        """The Python a worker runs with: the env's or image's if it runs inside them."""
        return self.python if wrap and self.python else host_python

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
        if self.layout.cores_per_rank:  # OpenMP's default is every core of the node, per rank
            env["OMP_NUM_THREADS"] = str(self.layout.cores_per_rank)
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
                pre_exec: str | Sequence[str] | None = None,
                python: str | None = None) -> LaunchChain:
    """Compose a chain from plain values (already validated by the resource specification).

    `container` is ``{"type", "image", "binds"?, "options"?, "gpu_vendor"?}``, `conda` is
    ``{"env"}`` or ``{"prefix"}`` with an optional ``"tool"``; `launcher_settings` are keyword
    options of the launcher (e.g. ``{"oversubscribe": True}`` for openmpi); `python` names the
    interpreter inside the env or image (default ``python3``).
    """
    shell.quote(sandbox)  # type check
    launch: tuple[Token, ...] = ()
    if launcher is not None:
        launch = tuple(launcher_argv(launcher, layout, launcher_options,
                                     **(launcher_settings or {})))
    box: tuple[Token, ...] = ()
    if container:
        binds = [b if isinstance(b, Bind) else Bind.parse(b) for b in container.get("binds", ())]
        vendor = container.get("gpu_vendor", "nvidia") if layout.gpus_per_node else None
        box = tuple(container_argv(container["type"], container["image"], binds, sandbox,
                                   container.get("options"), gpus=vendor))
    env: tuple[Token, ...] = ()
    prelude = module_lines(modules) + pre_exec_lines(pre_exec)
    if conda:
        cenv = CondaEnv(env=conda.get("env"), prefix=conda.get("prefix"),
                        tool=conda.get("tool", "conda"))
        if box:
            env = tuple(cenv.run_argv())
        else:  # once per job, after the modules and the admin's set-up that may provide it
            prelude += cenv.activation_lines()
    interpreter = (python or "python3") if (box or conda) else None
    return LaunchChain(sandbox=sandbox, layout=layout, launcher=launch, container=box,
                       conda=env, prelude=tuple(prelude), python=interpreter)
