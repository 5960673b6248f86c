"""From a Harvester worker (WorkSpec) and its queue config to one fnrelay task.

A worker becomes a call of a ShellFunction (one node) or an MPIFunction (several nodes, or
jobType MPI) running the queue's ``executable`` template. The template's fields are filled by
ShellFunction itself with ``quote_values=True``, which shell-quotes every value, so a worker
attribute can never inject shell syntax into the pilot command.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any

from fnrelay.functions import MPIFunction, ShellFunction

from .common import access_point, log_paths

#: Placeholders the executable template may use.
PLACEHOLDERS = (
    "workerID", "accessPoint", "computingSite", "queueName", "jobType", "resourceType",
    "pilotType", "nCore", "nCorePerNode", "nNode", "requestRam", "requestWalltime",
    "stdOut", "stdErr",
)


class WorkerRefused(ValueError):
    """This worker cannot become a task (a permanent failure: Harvester must not retry it)."""


@dataclass(frozen=True)
class WorkerTask:
    """What to submit for one worker."""

    function: ShellFunction
    kwargs: dict[str, str]
    resource_specification: dict[str, Any]


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise WorkerRefused(f"{name} must be a positive integer, not {value!r}") from None
    if number < 1:
        raise WorkerRefused(f"{name} must be a positive integer, not {value!r}")
    return number


def _first(*values: Any) -> Any:
    """The first value that is set (0 is set: it is refused, not replaced by a default)."""
    return next((v for v in values if v is not None), None)


def check_template(executable: Any) -> str:
    """The executable template, refused early if it names a field we do not fill."""
    if not isinstance(executable, str) or not executable.strip():
        raise WorkerRefused("queue config 'executable' must be a non-empty command template")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(executable) if f is not None]
    except ValueError as e:
        raise WorkerRefused(f"executable template {executable!r}: {e}") from None
    for name in fields:
        root = name.split(".")[0].split("[")[0]
        if root not in PLACEHOLDERS:
            raise WorkerRefused(
                f"executable template field {{{name}}} is unknown "
                f"(known: {', '.join(PLACEHOLDERS)})")
    return executable


def is_mpi(workspec: Any, n_core: int, n_core_per_node: int) -> bool:
    """A worker wider than one node, or one whose jobType says MPI, runs as an MPIFunction."""
    return n_core > n_core_per_node or str(workspec.jobType or "").upper() == "MPI"


def resource_specification(workspec: Any, config: Any, n_core: int, n_core_per_node: int,
                           mpi: bool) -> dict[str, Any]:
    """The task's resource_specification from the worker's needs and the queue's settings.

    Memory: ``minRamCount`` MB per node, as Harvester's Slurm submitter passes it to --mem.
    """
    if mpi:
        nodes = math.ceil(n_core / n_core_per_node)
        spec: dict[str, Any] = {"num_nodes": nodes,
                                "ranks_per_node": min(n_core, n_core_per_node),
                                "num_ranks": n_core}
    else:
        spec = {"num_nodes": 1, "ranks_per_node": 1, "cores_per_rank": n_core}
    if workspec.minRamCount:
        spec["memory"] = f"{_positive_int('minRamCount', workspec.minRamCount)}M"
    if workspec.maxWalltime:
        spec["walltime"] = _positive_int("maxWalltime", workspec.maxWalltime)
    for key in ("partition", "account", "container", "conda"):
        value = getattr(config, key, None)
        if value:
            spec[key] = value
    return spec


def placeholders(workspec: Any, config: Any, n_core: int, n_core_per_node: int,
                 spec: dict[str, Any]) -> dict[str, str]:
    """The values the executable template may use (strings; None becomes empty)."""
    stdout, stderr = log_paths(workspec)
    values = {
        "workerID": workspec.workerID,
        "accessPoint": access_point(workspec),
        "computingSite": workspec.computingSite,
        "queueName": getattr(workspec, "queueName", None) or getattr(config, "queueName", None),
        "jobType": workspec.jobType,
        "resourceType": getattr(workspec, "resourceType", None),
        "pilotType": getattr(workspec, "pilotType", None),
        "nCore": n_core,
        "nCorePerNode": n_core_per_node,
        "nNode": spec["num_nodes"],
        "requestRam": workspec.minRamCount,
        "requestWalltime": workspec.maxWalltime,
        "stdOut": stdout,
        "stdErr": stderr,
    }
    return {k: "" if v is None else str(v) for k, v in values.items()}


def worker_task(workspec: Any, config: Any) -> WorkerTask:
    """The task of one worker; raises WorkerRefused when the worker or config cannot work."""
    executable = check_template(getattr(config, "executable", None))
    n_core_per_node = _positive_int("nCorePerNode",
                                    _first(getattr(config, "nCorePerNode", None), 1))
    n_core = _positive_int("nCore", _first(workspec.nCore, getattr(config, "nCore", None),
                                           n_core_per_node))
    try:
        access_point(workspec)
    except ValueError as e:
        raise WorkerRefused(str(e)) from None
    mpi = is_mpi(workspec, n_core, n_core_per_node)
    spec = resource_specification(workspec, config, n_core, n_core_per_node, mpi)
    walltime = spec.get("walltime")
    # Worker attributes come from PanDA and the queue config, not from whoever wrote the
    # template: quoted, each stays one word.
    function = (MPIFunction if mpi else ShellFunction)(executable, walltime=walltime,
                                                       quote_values=True)
    kwargs = placeholders(workspec, config, n_core, n_core_per_node, spec)
    try:
        ShellFunction.format_command(function, **kwargs)  # the template itself, without MPI
    except ValueError as e:
        raise WorkerRefused(str(e)) from None
    return WorkerTask(function, kwargs, spec)
