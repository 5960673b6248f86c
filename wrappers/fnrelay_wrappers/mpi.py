"""MPI launchers: how one command starts as N ranks on the nodes a job already holds.

Each launcher is a function from a `Layout` to an argv prefix. Their flags differ for the same
intent (OpenMPI maps ranks with ``--map-by ppr:N:node``, MPICH and Cray PALS use ``-ppn N``,
aprun uses ``-N``), which is why each has its own small function. Where nodes come from is the
scheduler template's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fnrelay_wrappers.shell import EnvRef, Token, split_options


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


HostSource = str | EnvRef | None


def srun(layout: Layout, options: str | Iterable[str] | None = None) -> list[Token]:
    """Slurm's own launcher (inside an allocation it needs no host list)."""
    argv: list[Token] = [
        "srun",
        "-N", str(layout.num_nodes),
        "-n", str(layout.num_ranks),
        f"--ntasks-per-node={layout.ranks_per_node}",
    ]
    if layout.cores_per_rank:
        argv.append(f"--cpus-per-task={layout.cores_per_rank}")
    if layout.gpus_per_node:
        argv.append(f"--gpus-per-node={layout.gpus_per_node}")
    return argv + split_options(options)


def openmpi(layout: Layout, options: str | Iterable[str] | None = None, *,
            oversubscribe: bool = False, allow_run_as_root: bool = False,
            hostfile: HostSource = None) -> list[Token]:
    """OpenMPI's ``mpiexec``: ranks per node through ``--map-by ppr:N:node``."""
    mapping = f"ppr:{layout.ranks_per_node}:node"
    if layout.cores_per_rank and layout.cores_per_rank > 1:
        mapping += f":PE={layout.cores_per_rank}"
    argv: list[Token] = ["mpiexec", "-n", str(layout.num_ranks), "--map-by", mapping]
    if hostfile is not None:
        argv += ["--hostfile", hostfile]
    if oversubscribe:
        argv.append("--oversubscribe")
    if allow_run_as_root:
        argv.append("--allow-run-as-root")
    return argv + split_options(options)


def mpich(layout: Layout, options: str | Iterable[str] | None = None, *,
          hostfile: HostSource = None, hosts: Iterable[str] | None = None) -> list[Token]:
    """MPICH (Hydra) and Cray PALS ``mpiexec``: ``-n`` total, ``-ppn`` per node.

    Give `hostfile` (e.g. ``EnvRef("PBS_NODEFILE")``) or `hosts`, not both.
    """
    argv: list[Token] = ["mpiexec", "-n", str(layout.num_ranks), "-ppn",
                         str(layout.ranks_per_node)]
    host_list = list(hosts) if hosts is not None else None
    if hostfile is not None and host_list:
        raise ValueError("give either hostfile or hosts, not both")
    if hostfile is not None:
        argv += ["--hostfile", hostfile]
    elif host_list:
        argv += ["-hosts", ",".join(host_list)]
    return argv + split_options(options)


def aprun(layout: Layout, options: str | Iterable[str] | None = None) -> list[Token]:
    """Cray ALPS ``aprun``: ``-n`` total, ``-N`` per node, ``-d`` cores per rank."""
    argv: list[Token] = ["aprun", "-n", str(layout.num_ranks), "-N", str(layout.ranks_per_node)]
    if layout.cores_per_rank:
        argv += ["-d", str(layout.cores_per_rank)]
    return argv + split_options(options)


def flux(layout: Layout, options: str | Iterable[str] | None = None) -> list[Token]:
    """Flux's ``flux run`` inside a Flux instance (a `flux batch` job): ``-N`` nodes, ``-n``
    tasks, ``-c`` cores and ``-g`` GPUs per task (flux-run(1), flux-core 0.6x)."""
    argv: list[Token] = ["flux", "run", "-N", str(layout.num_nodes), "-n",
                         str(layout.num_ranks)]
    if layout.cores_per_rank:
        argv += ["-c", str(layout.cores_per_rank)]
    if layout.gpus_per_node:
        argv += ["-g", str(max(1, layout.gpus_per_node // layout.ranks_per_node))]
    return argv + split_options(options)


#: Launcher names an endpoint config may choose; "pals" is Cray PALS (MPICH-style flags).
LAUNCHERS: dict[str, Callable[..., list[Token]]] = {
    "srun": srun,
    "openmpi": openmpi,
    "mpich": mpich,
    "pals": mpich,
    "aprun": aprun,
    "flux": flux,
}


def launcher_argv(kind: str, layout: Layout, options: str | Iterable[str] | None = None,
                  **settings: object) -> list[Token]:
    """The argv prefix of launcher `kind`; `settings` are that launcher's keyword options."""
    try:
        build = LAUNCHERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown MPI launcher {kind!r} (known: {', '.join(sorted(LAUNCHERS))})"
        ) from None
    return build(layout, options, **settings)
