"""Engine `parsl`: many tasks per scheduler job (pilot blocks), on Parsl.

Tasks go to a Parsl DataFlowKernel of this engine's own (never the process-global
``parsl.load``): plain tasks to its HighThroughputExecutor, tasks whose resource specification
sets an MPI layout (num_nodes / ranks_per_node / num_ranks) to its MPIExecutor, which receives
only those keys. Parsl's strategy grows blocks with queued tasks and retires idle ones after
`max_idletime`; Parsl's heartbeats notice a lost worker pool (scancel, walltime, node crash) and
fail its in-flight tasks, reported here as "worker lost" with ``details.infrastructure``.

Every task reports `waiting-for-nodes` when handed to Parsl and `running` when a worker asks
the start gate (see worker.py) for permission to start it. A task cancelled before that
never runs; a running one cannot be stopped (Parsl's HTEX has no per-task kill).

A shared endpoint's submitters take turns: every task goes to Parsl at once (its strategy
sizes blocks by the tasks it holds), each HTEX task with a `priority` from TurnNumbers, which
Parsl's interchange serves lowest first, so one user's flood does not queue a lone call
behind it.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import socket
import threading
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fnrelay.wire import ResultMessage, StatusUpdate, TaskMessage, TaskState
from fnrelay_endpoint.engines.base import (
    Engine,
    ResultCallback,
    StatusCallback,
    failed_result,
    refused_result,
)
from fnrelay_endpoint.engines.fair_queue import TurnNumbers
from fnrelay_endpoint.engines.interpreters import Interpreters
from fnrelay_endpoint.engines.parsl.settings import (
    HTEX_LABEL,
    MPI_LABEL,
    ParslSettings,
    build_config,
    version_label,
)
from fnrelay_endpoint.engines.parsl.worker import CANCELLED_KEY, run_task
from fnrelay_endpoint.engines.resources import (
    LAYOUT_KEYS,
    ResourceSpecification,
    ResourceSpecificationError,
)
from fnrelay_endpoint.worker import cancelled_result

log = logging.getLogger(__name__)

WORKER_LOST_TYPE = "fnrelay_endpoint.WorkerLost"
PARSL_FAILURE_TYPE = "fnrelay_endpoint.ParslFailure"
#: What an interpreter of another version runs: Parsl's interchange and worker pool, the task.
_NEEDS = ("parsl.executors.high_throughput.interchange, "
          "parsl.executors.high_throughput.process_worker_pool, "
          "fnrelay_endpoint.engines.parsl.worker")
#: Parsl exceptions that mean the worker or its pilot block went away under the task.
_LOST = ("ManagerLost", "WorkerLost")


@dataclass
class _Entry:
    task: TaskMessage
    future: Any = None
    running: bool = False
    cancelled: bool = False
    turn: int | None = None  # its TurnNumbers number (HTEX tasks)


class ParslEngine(Engine):
    name = "parsl"

    def __init__(self, config: dict[str, Any], workdir: Path, on_result: ResultCallback,
                 on_status: StatusCallback):
        """`config` is the `engine:` mapping; Parsl's run dir is `workdir`/parsl."""
        super().__init__(on_result, on_status)
        self.settings = ParslSettings.from_dict(config)
        #: Each run once now: its version, and that it holds Parsl's and fnrelay's workers.
        self._versions = Interpreters.start(self.settings.python_interpreters, needs=_NEEDS)
        self.run_dir = Path(workdir) / "parsl"
        self._lock = threading.Lock()
        self._tasks: dict[str, _Entry] = {}
        self._turns = TurnNumbers()
        self._dfk: Any = None
        self._stopping = False
        self._gate = _Gate(self._gate_request, self._gate_addresses())

    @classmethod
    def validate_config(cls, config: dict[str, Any], source: str) -> dict[str, Any]:
        """Check `engine:` (see ParslSettings); the mapping itself is kept as written."""
        ParslSettings.from_dict(config, source)
        return {**config, "type": "parsl"}

    @classmethod
    def from_config(cls, config: dict[str, Any], workdir: Path, on_result: ResultCallback,
                    on_status: StatusCallback) -> ParslEngine:
        return cls(config, workdir, on_result, on_status)

    # --- public API -----------------------------------------------------------------------
    def start(self) -> None:
        from parsl.dataflow.dflow import DataFlowKernel

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._gate.start()
        self._dfk = DataFlowKernel(build_config(self.settings, self.run_dir))
        log.info("parsl engine started (provider %s, run dir %s)", self.settings.provider,
                 self._dfk.run_dir)

    def submit(self, task: TaskMessage) -> None:
        try:
            label, mpi, spec = self._route(task)
        except ResourceSpecificationError as e:
            self.on_result(refused_result(task, str(e)))
            return
        entry = _Entry(task)
        with self._lock:
            if self._stopping:
                return  # the journal re-runs it at the next start
            self._tasks[task.task_id] = entry
            if mpi is None:  # the MPIExecutor refuses any key but the layout's
                entry.turn = self._turns.number(task.submitter)
                spec = {"priority": entry.turn}
        self.on_status(StatusUpdate(task_id=task.task_id,
                                    status=TaskState.WAITING_FOR_NODES.value,
                                    detail=f"queued for a worker of parsl executor {label}"))
        kwargs: dict[str, Any] = {"gate": self._gate.ticket(), "mpi": mpi}
        if spec:
            kwargs["parsl_resource_specification"] = spec
        try:
            future = self._dfk.submit(run_task, app_args=(asdict(task),), executors=[label],
                                      cache=False, ignore_for_cache=[], app_kwargs=kwargs)
        except Exception as e:  # noqa: BLE001 - e.g. the DFK is shutting down
            with self._lock:
                self._tasks.pop(task.task_id, None)
                stopping = self._stopping
            if not stopping:
                self.on_result(failed_result(task, PARSL_FAILURE_TYPE,
                                             f"parsl refused the task: {e}",
                                             details={"infrastructure": True}))
            return
        entry.future = future
        future.add_done_callback(partial(self._done, task.task_id))

    def cancel(self, task_id: str) -> bool:
        """Cancel a task no worker has started; a running task cannot be stopped (False)."""
        with self._lock:
            entry = self._tasks.get(task_id)
            if entry is None or entry.cancelled:
                return False
            if entry.running:
                log.warning("task %s is running in a parsl worker and cannot be cancelled",
                            task_id)
                return False
            entry.cancelled = True  # the gate now answers "cancel"; the result is dropped
        self.on_result(cancelled_result(task_id, entry.task.task_group_id,
                                        "cancelled while queued"))
        return True

    def shutdown(self) -> None:
        """Stop Parsl: scale in every block (scancel/qdel of the pilot jobs), then the gate."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._tasks.clear()
        dfk, self._dfk = self._dfk, None
        if dfk is not None:
            try:
                dfk.cleanup()
            except Exception:  # noqa: BLE001 - still cancel whatever jobs are left
                log.exception("parsl cleanup failed")
            finally:
                _cancel_leftover_jobs(dfk)
        self._gate.stop()

    def info(self) -> dict[str, Any]:
        with self._lock:
            running = sum(1 for e in self._tasks.values() if e.running)
            queued = len(self._tasks) - running
        info: dict[str, Any] = {"engine": self.name, "provider": self.settings.provider,
                                "running": running, "queued": queued}
        info["blocks"] = self.job_ids()
        # Parsl's workers of the main HTEX are of our version (its interchange refuses others).
        info["python_versions"] = self._versions.versions()
        return info

    def job_ids(self) -> dict[str, list[str]]:
        """Scheduler job ids (local: pids) of every block Parsl submitted, by executor."""
        dfk = self._dfk
        if dfk is None:
            return {}
        return {label: [str(j) for j in getattr(ex.provider, "resources", {})]
                for label, ex in dfk.executors.items() if getattr(ex, "provider", None)}

    # --- routing ----------------------------------------------------------------------------
    def _route(self, task: TaskMessage) -> tuple[str, dict[str, Any] | None, dict[str, int]]:
        """(executor label, MPI settings for the worker, Parsl resource specification).

        HTEX accepts only `priority`, the MPIExecutor only the layout keys and
        launcher_options: everything else of fnrelay's specification stays here.
        """
        raw = task.resource_specification or {}
        spec = ResourceSpecification.from_task(raw, None, self.settings.allowed_free_text)
        if not any(k in raw for k in LAYOUT_KEYS):
            version = task.python_version or ""
            return (version_label(version) if version in self._versions.others
                    else HTEX_LABEL), None, {}
        mpi = self.settings.mpi
        if not mpi.enabled:
            raise ResourceSpecificationError(
                "resource_specification sets an MPI layout but this endpoint's parsl engine "
                "has MPI disabled (engine.mpi.enabled: false)")
        if spec.num_nodes > mpi.nodes_per_block:
            raise ResourceSpecificationError(
                f"resource_specification 'num_nodes': {spec.num_nodes} nodes do not fit a "
                f"pilot block of {mpi.nodes_per_block} (engine.mpi.nodes_per_block)")
        layout = spec.layout()
        worker_mpi = {
            "layout": asdict(layout), "launcher": mpi.launcher,
            "launcher_settings": mpi.launcher_settings,
            "launcher_options": spec.launcher_options, "container": spec.container,
            "conda": spec.conda,
        }
        parsl_spec = {"num_nodes": spec.num_nodes, "ranks_per_node": spec.ranks_per_node,
                      "num_ranks": spec.num_ranks}
        return MPI_LABEL, worker_mpi, parsl_spec

    # --- callbacks (Parsl's and the gate's threads) -----------------------------------------------
    def _done(self, task_id: str, future: Any) -> None:
        with self._lock:
            entry = self._tasks.pop(task_id, None)
            if entry is None or self._stopping or entry.cancelled:
                return
        try:
            answer = future.result()
        except Exception as e:  # noqa: BLE001 - anything Parsl raises is infrastructure
            result = self._lost(entry.task, e)
        else:
            if answer.get(CANCELLED_KEY):
                result = cancelled_result(task_id, entry.task.task_group_id,
                                          "cancelled while queued")
            else:
                result = ResultMessage.from_dict(answer)
        self.on_result(result)

    def _lost(self, task: TaskMessage, exc: BaseException) -> ResultMessage:
        kind = type(exc).__name__
        details = {"infrastructure": True, "parsl_error": kind}
        if kind in _LOST:
            return failed_result(task, WORKER_LOST_TYPE,
                                 f"worker lost: the Parsl worker or pilot job running this "
                                 f"task died ({kind}: {exc})", details=details)
        return failed_result(task, PARSL_FAILURE_TYPE, f"the parsl engine could not run this "
                             f"task ({kind}: {exc})", details=details)

    def _gate_request(self, task_id: str, host: str) -> str:
        """A worker is about to start `task_id`: 'go' (and report running) or 'cancel'."""
        with self._lock:
            entry = self._tasks.get(task_id)
            if entry is None or entry.cancelled:
                return "cancel"
            first = not entry.running
            entry.running = True
            if first and entry.turn is not None:
                self._turns.started(entry.turn)
        if first:
            self.on_status(StatusUpdate(task_id=task_id, status=TaskState.RUNNING.value,
                                        detail=f"parsl worker on {host}"))
        return "go"

    def _gate_addresses(self) -> list[str]:
        if self.settings.address:
            return [self.settings.address]
        if self.settings.provider == "local":
            return ["127.0.0.1"]
        from parsl.addresses import get_all_addresses

        return sorted(get_all_addresses())


def _cancel_leftover_jobs(dfk: Any) -> None:
    """Cancel blocks Parsl still lists as alive (cleanup normally did it already)."""
    for ex in dfk.executors.values():
        provider = getattr(ex, "provider", None)
        if provider is None:
            continue
        ids = [j for j, r in getattr(provider, "resources", {}).items()
               if not getattr(r.get("status"), "terminal", False)]
        if ids:
            try:
                provider.cancel(ids)
            except Exception:  # noqa: BLE001
                log.exception("cancelling parsl blocks %s failed", ids)


class _Gate:
    """UDP server answering workers' "start <secret> <task_id>" with "go|cancel <task_id>"."""

    def __init__(self, decide: Any, addresses: list[str]):
        self.decide = decide
        self.addresses = addresses
        self.secret = secrets.token_hex(16)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("0.0.0.0", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name="fnrelay-parsl-gate")
        self._stop = threading.Event()

    def ticket(self) -> dict[str, Any]:
        return {"addresses": self.addresses, "port": self.port, "secret": self.secret}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.sendto(b"", ("127.0.0.1", self.port))  # wake recvfrom
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(512)
            except OSError:
                return
            parts = data.decode(errors="replace").split()
            if len(parts) != 3 or parts[0] != "start" \
                    or not hmac.compare_digest(parts[1], self.secret):
                continue
            try:
                answer = self.decide(parts[2], peer[0])
            except Exception:  # noqa: BLE001 - never kill the gate
                log.exception("start gate failed for task %s", parts[2])
                answer = "go"
            try:
                self._sock.sendto(f"{answer} {parts[2]}".encode(), peer)
            except OSError:
                pass


ENGINE = ParslEngine
