"""What runs inside a Parsl worker: ask the engine's start gate, set the MPI prefix, execute.

Parsl imports this module by name in its workers (functions are pickled by reference), so the
worker's Python needs fnrelay installed, as for the batch engine.

The start gate is a UDP request/reply to the engine: "start <secret> <task_id>" answered by
"go" or "cancel". It tells the engine when a task really starts (Parsl has no such event for
HTEX tasks queued in its interchange) and lets a task cancelled while queued not run at all.
If the engine does not answer, the task runs anyway: the gate is best effort, results are not.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fnrelay.wire import TaskMessage
from fnrelay_endpoint.engines.local.task_output import TAIL_KEPT, TaskOutput
from fnrelay_endpoint.worker import execute
from fnrelay_wrappers.chain import build_chain
from fnrelay_wrappers.mpi import Layout

#: The key of a worker's answer when the gate said the task was cancelled.
CANCELLED_KEY = "fnrelay_cancelled"
GATE_TRIES = 3
GATE_TIMEOUT = 2.0


def ask_gate(task_id: str, gate: dict[str, Any]) -> str:
    """'go' or 'cancel' from the engine at gate['addresses']:gate['port'] ('go' if silent)."""
    request = f"start {gate['secret']} {task_id}".encode()
    for _ in range(GATE_TRIES):
        for address in gate["addresses"]:
            try:
                with socket.socket(_family(address), socket.SOCK_DGRAM) as s:
                    s.settimeout(GATE_TIMEOUT / len(gate["addresses"]))
                    s.sendto(request, (address, gate["port"]))
                    reply = s.recv(512).decode(errors="replace").split()
            except OSError:
                continue
            if len(reply) == 2 and reply[1] == task_id and reply[0] in ("go", "cancel"):
                return reply[0]
    return "go"


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def mpi_env(mpi: dict[str, Any], sandbox: str) -> dict[str, str]:
    """FNRELAY_MPI_PREFIX & co for the nodes Parsl's MPIExecutor gave this task.

    Parsl's own PARSL_MPI_PREFIX uses MPICH flags (-ppn, -hosts) that OpenMPI refuses, so the
    prefix comes from fnrelay's launchers, aimed at PARSL_MPI_NODELIST.
    """
    layout = Layout(**mpi["layout"])
    nodes = [n for n in os.environ.get("PARSL_MPI_NODELIST", "").split(",") if n]
    launcher, settings = mpi["launcher"], dict(mpi.get("launcher_settings") or {})
    extra = node_options(launcher, nodes, layout, settings)
    options = mpi.get("launcher_options")
    if extra:
        options = [*extra, *_as_list(options)]
    chain = build_chain(sandbox, layout, launcher=launcher, launcher_options=options,
                        launcher_settings=settings, container=mpi.get("container"),
                        conda=mpi.get("conda"))
    return chain.env()


def node_options(launcher: str, nodes: list[str], layout: Layout,
                 settings: dict[str, Any]) -> list[str]:
    """Launcher flags that confine the ranks to `nodes`, the block's nodes Parsl gave the task.

    Needed for one node too: a block holds several nodes and runs several tasks at once, and a
    launcher left to itself starts every task's ranks from the allocation's first node.
    `settings` (hosts=...) gains MPICH's host list; an admin's own hostfile wins.
    """
    if not nodes or "hostfile" in settings:
        return []
    if launcher == "srun":
        return [f"--nodelist={','.join(nodes)}"]
    if launcher in ("mpich", "pals"):
        settings["hosts"] = nodes
        return []
    if launcher == "openmpi":
        return ["--host", ",".join(f"{n}:{layout.ranks_per_node}" for n in nodes)]
    if launcher == "aprun":  # -L takes ALPS node ids: nid00012 is 12
        return ["-L", ",".join(_nid(n) for n in nodes)]
    return []


def _nid(host: str) -> str:
    digits = host.removeprefix("nid")
    return str(int(digits)) if digits.isdigit() else host


def _as_list(options: Any) -> list[str]:
    from fnrelay_wrappers.shell import split_options

    return split_options(options)


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Set `env` for one task; a Parsl worker process runs many tasks one after another."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_task(task: dict[str, Any], gate: dict[str, Any] | None = None,
             mpi: dict[str, Any] | None = None,
             parsl_resource_specification: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one fnrelay task (a TaskMessage as a dict); the ResultMessage as a dict.

    `parsl_resource_specification` is consumed by Parsl (MPI layout) and unused here.
    """
    if gate is not None and ask_gate(task["task_id"], gate) == "cancel":
        return {CANCELLED_KEY: True}
    env = mpi_env(mpi, os.getcwd()) if mpi else {}
    with _environ(env), _captured(task["task_id"]) as output:
        result = execute(TaskMessage.from_dict(task))
    result.details.update(output)
    return asdict(result)


@contextlib.contextmanager
def _captured(task_id: str) -> Iterator[dict[str, Any]]:
    """What the task prints, as the tails its result carries (filled in at the end).

    A Parsl worker's stdout and stderr are its pool's log files on the node, out of the
    user's reach, so the task's own output is captured as on the local engine, in a
    temporary directory: the node's files are not the endpoint's, only the tails travel.
    """
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fnrelay-parsl-") as root:
        output = TaskOutput(Path(root), task_id, TAIL_KEPT)
        output.start()
        try:
            yield details
        finally:
            tails = output.finish()
            details.update({k: v for k, v in tails.items() if k.endswith("_tail")})
