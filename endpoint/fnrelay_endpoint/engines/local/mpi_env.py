"""The MPI launcher a local worker gives its tasks.

MPIFunction (fnrelay's and Globus Compute's) starts its command with ``$FNRELAY_MPI_PREFIX``
/ ``$PARSL_MPI_PREFIX``. On the local engine that is the endpoint admin's own prefix if set,
else ``mpiexec <mpi_options> -n <ranks>``. OpenMPI refuses to start as root, which is how the
README's commands (and this suite) run an endpoint: a worker that runs as root therefore
allows it through OpenMPI's two variables, unless the admin set them.
"""

from __future__ import annotations

import os
import shlex

from fnrelay.wire.names import ENV_MPI_PREFIX, ENV_NUM_RANKS, ENV_PARSL_MPI_PREFIX

#: OpenMPI's opt-in to running as root (both must be 1; see mpirun(1)).
OMPI_ROOT_VARS = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")


def allow_root_launch() -> None:
    """As root, let OpenMPI start ranks (the endpoint runs as root by its admin's choice)."""
    if os.geteuid() == 0:
        for name in OMPI_ROOT_VARS:
            os.environ.setdefault(name, "1")


def default_prefix(ranks: int | None, options: tuple[str, ...]) -> str:
    """``mpiexec <options> -n <ranks>`` (one rank without a layout)."""
    return shlex.join(["mpiexec", *options, "-n", str(ranks or 1)])


def set_mpi_env(ranks: int | None, admin_prefix: str | None, options: tuple[str, ...]) -> None:
    """The task's MPI environment in this worker: its rank count, and the launcher under both
    names (``$FNRELAY_MPI_PREFIX`` and Globus Compute's ``$PARSL_MPI_PREFIX``, equal), so an
    MPIFunction of either SDK starts the same ranks. A worker runs many tasks: each task's
    values replace the last one's."""
    if ranks is None:
        os.environ.pop(ENV_NUM_RANKS, None)
    else:
        os.environ[ENV_NUM_RANKS] = str(ranks)
    prefix = admin_prefix or default_prefix(ranks, options)
    os.environ[ENV_MPI_PREFIX] = os.environ[ENV_PARSL_MPI_PREFIX] = prefix
