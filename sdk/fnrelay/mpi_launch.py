"""Telling an MPI launcher that refused to start from an MPI program that failed.

An MPIFunction's exit status is its program's own result (Globus Compute returns it in a
ShellResult, and so does fnrelay). But when the launcher itself refuses before any rank
starts (OpenMPI as root, too few slots, no launcher at all), a ShellResult whose stdout is
empty reads as a blank answer. The launchers say so in words of their own, matched here, and
MPIFunction raises MPILaunchError with them instead.
"""

from __future__ import annotations

import os
import shlex

from fnrelay.errors import MPILaunchError

#: What a launcher prints when it starts no rank, and what to do about it.
REFUSALS: tuple[tuple[str, str], ...] = (
    ("detected an attempt to run as root",
     "OpenMPI refuses root: run the endpoint as another user, or set "
     "OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"),
    ("There are not enough slots available",
     "more ranks than this machine's cores: ask for fewer, or add --oversubscribe to the "
     "launcher (the local engine's mpi_options)"),
    ("srun: error: Unable to create step",
     "Slurm could not start the ranks in this allocation"),
    ("srun: error: Unable to allocate resources",
     "Slurm could not allocate the ranks"),
)


def launch_failure(prefix: str, returncode: int, stderr: str) -> str | None:
    """Why launcher `prefix` started no rank, from its exit status and stderr; None when the
    failure (if any) is the program's own."""
    if returncode == 0:
        return None
    words = shlex.split(prefix) if prefix.strip() else []
    launcher = os.path.basename(words[0]) if words else ""
    if returncode == 127 and launcher and f"{launcher}: command not found" in stderr:
        return f"{launcher!r} is not installed or not on the PATH"
    for words_seen, advice in REFUSALS:
        if words_seen in stderr:
            return advice
    return None


def launch_error(prefix: str, returncode: int, stderr: str) -> MPILaunchError | None:
    """The error to raise for a launcher that refused (None: the program ran)."""
    why = launch_failure(prefix, returncode, stderr)
    if why is None:
        return None
    detail = " ".join(line.strip() for line in stderr.strip().splitlines()[:3] if line.strip()
                      and not line.startswith("---"))
    return MPILaunchError(f"MPI launcher {prefix!r} started no rank (exit {returncode}): "
                          f"{why}. Its error: {detail[:300]}")
