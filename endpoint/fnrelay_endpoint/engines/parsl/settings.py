"""Settings of the `parsl` engine (config.yaml `engine:`) and the Parsl Config built from them.

Where nodes come from is Parsl's provider (local, Slurm, PBSPro); tasks run in Parsl's
HighThroughputExecutor (HTEX), MPI tasks in its MPIExecutor on separate pilot blocks. The
MPIExecutor must use Parsl's SimpleLauncher (one worker pool on the block's first node whose
workers start ranks themselves), so its provider is built apart from HTEX's.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.config import validators as check
from fnrelay_endpoint.engines import interpreters
from fnrelay_endpoint.engines.parsl import providers
from fnrelay_endpoint.engines.parsl.polling import polled
from fnrelay_endpoint.engines.resources import (
    FREE_TEXT_KEYS,
    NAME_PATTERN,
    ResourceSpecificationError,
    parse_walltime,
)
from fnrelay_wrappers import shell
from fnrelay_wrappers.container import RUNTIMES, Bind, container_argv
from fnrelay_wrappers.mpi import LAUNCHERS

PROVIDERS = ("local", "slurm", "pbspro")
#: Parsl launchers an HTEX provider may use (how the worker pool starts on a block's nodes).
BLOCK_LAUNCHERS = ("single", "simple", "srun", "mpiexec", "mpirun", "aprun")
HTEX_LABEL = "fnrelay-htex"
MPI_LABEL = "fnrelay-mpi"
#: fnrelay MPI launcher (wrappers) used for $FNRELAY_MPI_PREFIX when the config names none,
#: as the batch engine's per scheduler (MPICH-style flags where the family is not listed).
DEFAULT_MPI_LAUNCHER = {"local": "openmpi", "slurm": "srun", "pbspro": "mpich",
                        "sge": "openmpi", "lsf": "openmpi", "htcondor": "openmpi"}
#: Keys that shape blocks of a short-named provider; a typed provider takes them itself.
PROVIDER_KEYS = frozenset({
    "launcher", "nodes_per_block", "cores_per_node", "init_blocks", "min_blocks", "max_blocks",
    "walltime", "partition", "queue", "account", "qos", "exclusive", "worker_init",
    "scheduler_options"})

CONFIG_KEYS = frozenset({
    "type", "provider", "launcher", "nodes_per_block", "cores_per_node", "init_blocks",
    "min_blocks", "max_blocks", "max_workers_per_node", "max_workers", "walltime", "partition",
    "queue", "account", "qos", "exclusive", "worker_init", "scheduler_options", "container",
    "max_idletime", "strategy_period", "heartbeat_period", "heartbeat_threshold", "poll_period",
    "retries", "address", "mpi", "python", "status_poll_period", "allowed_free_text",
    "block_failure_threshold", interpreters.KEY,
})
MPI_KEYS = frozenset({"enabled", "launcher", "launcher_settings", "nodes_per_block",
                      "max_blocks", "max_workers_per_block"})


@dataclass(frozen=True)
class MPISettings:
    """The MPI pilot blocks: one SimpleLauncher pool per block, `max_workers_per_block` tasks."""

    enabled: bool = True
    launcher: str = "openmpi"
    launcher_settings: dict[str, Any] = field(default_factory=dict)
    nodes_per_block: int = 1
    max_blocks: int = 1
    max_workers_per_block: int = 1


@dataclass(frozen=True)
class ParslSettings:
    """Validated `engine:` settings of type parsl.

    `provider` is the scheduler family ("local", "slurm", ..., "other"); `provider_spec` is a
    typed provider's mapping (`{type: SlurmProvider, ...}`), None for a short-named one.
    """

    provider: str = "local"
    provider_spec: dict[str, Any] | None = None
    launcher: str = "single"
    nodes_per_block: int = 1
    cores_per_node: int | None = None
    init_blocks: int = 0
    min_blocks: int = 0
    max_blocks: int = 1
    max_workers_per_node: int | None = None
    walltime: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    exclusive: bool = True
    worker_init: str = ""
    scheduler_options: str = ""
    container: dict[str, Any] | None = None
    max_idletime: float = 120.0
    strategy_period: float = 5.0
    heartbeat_period: int = 30
    heartbeat_threshold: int = 120
    poll_period: int = 10
    status_poll_period: float | None = None
    retries: int = 0
    address: str | None = None
    python: str = sys.executable
    block_failure_threshold: int = 3
    allowed_free_text: frozenset[str] = frozenset()
    mpi: MPISettings = field(default_factory=MPISettings)
    #: Another HTEX per Python version ("3.13" -> path): its interchange and workers run
    #: on that interpreter (Parsl refuses workers of another minor version than its interchange).
    python_interpreters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "config") -> ParslSettings:
        """Check every key; errors name the key as `engine.<key>`."""
        return _parse(dict(config), source)


# --- validation ---------------------------------------------------------------------------------
def _err(source: str, key: str, why: str, value: Any) -> ConfigurationError:
    return check.refuse(source, f"engine.{key}", why, value)


@overload
def _int(c: dict, key: str, default: int, source: str, low: int = 0,
         section: str = "") -> int: ...
@overload
def _int(c: dict, key: str, default: None, source: str, low: int = 0,
         section: str = "") -> int | None: ...
def _int(c: dict, key: str, default: int | None, source: str, low: int = 0,
         section: str = "") -> int | None:
    """An integer setting; null only where there is no default (like `_number`)."""
    value = c.get(key, default)
    if value is None and default is None:
        return None
    return check.integer(value, f"engine.{section}{key}", source, low)


def _number(c: dict, key: str, default: float, source: str) -> float:
    return check.seconds(c.get(key, default), f"engine.{key}", source)


def _name(c: dict, key: str, source: str) -> str | None:
    value = c.get(key)
    if value is not None and (not isinstance(value, str) or not NAME_PATTERN.fullmatch(value)):
        raise _err(source, key, f"must match {NAME_PATTERN.pattern}", value)
    return value


def _text(c: dict, key: str, source: str) -> str:
    """Admin-written shell or directive text (worker_init, scheduler_options): lines joined."""
    value = c.get(key, "")
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = "\n".join(value)
    if not isinstance(value, str) or "\x00" in value:
        raise _err(source, key, "must be a string or a list of lines", value)
    return value


def _walltime(c: dict, source: str) -> str:
    value = c.get("walltime", "01:00:00")
    try:
        seconds = parse_walltime(value, "engine.walltime")
    except ResourceSpecificationError as e:
        raise ConfigurationError(f"{source}: {e}") from None
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _container(c: dict, source: str) -> dict[str, Any] | None:
    value = c.get("container")
    if value is None:
        return None
    if not isinstance(value, Mapping) or value.get("type") not in RUNTIMES \
            or not isinstance(value.get("image"), str):
        raise _err(source, "container", f"must be {{type: {'|'.join(RUNTIMES)}, image, binds?, "
                   "options?}", value)
    try:
        binds = [Bind.parse(b) for b in value.get("binds", [])]
        container_argv(value["type"], value["image"], binds, None, value.get("options"))
    except (ValueError, TypeError) as e:
        raise _err(source, "container", f"is invalid ({e})", value) from None
    return dict(value)


def _mpi(c: dict, provider: str, source: str) -> MPISettings:
    value = c.get("mpi") or {}
    if not isinstance(value, Mapping):
        raise _err(source, "mpi", "must be a mapping", value)
    unknown = set(value) - MPI_KEYS
    if unknown:
        raise _err(source, f"mpi.{sorted(unknown)[0]}", f"is unknown (known: "
                   f"{', '.join(sorted(MPI_KEYS))})", value)
    launcher = value.get("launcher", DEFAULT_MPI_LAUNCHER.get(provider, "mpich"))
    if launcher not in LAUNCHERS:
        raise _err(source, "mpi.launcher", f"must be one of {', '.join(sorted(LAUNCHERS))}",
                   launcher)
    settings = value.get("launcher_settings") or {}
    if not isinstance(settings, Mapping):
        raise _err(source, "mpi.launcher_settings", "must be a mapping", settings)
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(source, "mpi.enabled", "must be true or false", enabled)
    v = dict(value)
    return MPISettings(
        enabled=enabled, launcher=launcher, launcher_settings=dict(settings),
        nodes_per_block=_int(v, "nodes_per_block", 1, source, 1, "mpi."),
        max_blocks=_int(v, "max_blocks", 1, source, 1, "mpi."),
        max_workers_per_block=_int(v, "max_workers_per_block", 1, source, 1, "mpi."))


def _typed_provider(c: dict, source: str) -> dict[str, Any] | None:
    """`engine.provider` as `{type: <Parsl provider class>, ...}`, checked; None if short."""
    spec = c.get("provider")
    if not isinstance(spec, Mapping):
        return None
    cls = providers.provider_class(spec, source)
    both = sorted(PROVIDER_KEYS & set(c))
    if both:
        raise _err(source, both[0], f"belongs inside engine.provider with a typed provider "
                   f"({cls.__name__} takes its own keywords)", c[both[0]])
    mpi = c.get("mpi") or {}
    if isinstance(mpi, Mapping) and mpi.get("enabled", True):
        # The MPI pilots reuse the class with their own launcher and block shape.
        providers.check_keywords(cls, dict.fromkeys(_MPI_OVERRIDES), source, "engine.provider")
    return dict(spec)


def _parse(c: dict, source: str) -> ParslSettings:
    check.known_keys(c, CONFIG_KEYS, source, "engine.", "engine 'parsl'")
    spec = _typed_provider(c, source)
    provider = providers.family(spec) if spec else check.one_of(
        c.get("provider", "local"), "engine.provider", source, PROVIDERS)
    launcher = check.one_of(c.get("launcher", "single"), "engine.launcher", source,
                            BLOCK_LAUNCHERS)
    if "queue" in c and "partition" in c and c["queue"] != c["partition"]:
        raise _err(source, "queue", "differs from partition (they are one setting)", c["queue"])
    allowed = check.subset(c.get("allowed_free_text"), "engine.allowed_free_text", source,
                           FREE_TEXT_KEYS)
    exclusive = c.get("exclusive", True)
    if not isinstance(exclusive, bool):
        raise _err(source, "exclusive", "must be true or false", exclusive)
    if provider == "pbspro" and c.get("qos") is not None:
        raise _err(source, "qos", "is a Slurm setting: PBSPro has no QOS (use queue, or "
                   "scheduler_options for a site's own resource)", c["qos"])
    address = c.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise _err(source, "address", "must be a host name or IP address", address)
    workers = _int(c, "max_workers_per_node", None, source, 1)
    if workers is None:  # `max_workers` (the local engine's key) means the same here
        workers = _int(c, "max_workers", None, source, 1)
    s = ParslSettings(
        provider=provider, provider_spec=spec, launcher=launcher,
        nodes_per_block=_int(c, "nodes_per_block", 1, source, 1),
        cores_per_node=_int(c, "cores_per_node", None, source, 1),
        init_blocks=_int(c, "init_blocks", 0, source),
        min_blocks=_int(c, "min_blocks", 0, source),
        max_blocks=_int(c, "max_blocks", 1, source, 1),
        max_workers_per_node=workers,
        walltime=_walltime(c, source),
        partition=_name(c, "partition", source) or _name(c, "queue", source),
        account=_name(c, "account", source), qos=_name(c, "qos", source),
        exclusive=exclusive, worker_init=_text(c, "worker_init", source),
        scheduler_options=_text(c, "scheduler_options", source),
        container=_container(c, source),
        max_idletime=_number(c, "max_idletime", 120.0, source),
        strategy_period=_number(c, "strategy_period", 5.0, source),
        heartbeat_period=_int(c, "heartbeat_period", 30, source, 1),
        heartbeat_threshold=_int(c, "heartbeat_threshold", 120, source, 1),
        poll_period=_int(c, "poll_period", 10, source, 1),
        status_poll_period=_number(c, "status_poll_period", 60.0, source)
        if "status_poll_period" in c else None,
        retries=_int(c, "retries", 0, source),
        address=address,
        python=check.interpreter(c.get("python", sys.executable), "engine.python", source),
        block_failure_threshold=_int(c, "block_failure_threshold", 3, source, 1),
        allowed_free_text=allowed,
        mpi=_mpi(c, provider, source),
        python_interpreters=interpreters.validate(c.get(interpreters.KEY), source),
    )
    if not s.min_blocks <= s.max_blocks or s.init_blocks > s.max_blocks:
        raise _err(source, "max_blocks", "must be >= min_blocks and >= init_blocks", s.max_blocks)
    if s.heartbeat_threshold <= s.heartbeat_period:
        raise _err(source, "heartbeat_threshold", "must be larger than heartbeat_period",
                   s.heartbeat_threshold)
    return s


# --- Parsl objects ------------------------------------------------------------------------------
def _block_launcher(name: str) -> Any:
    from parsl.launchers import (
        AprunLauncher,
        MpiExecLauncher,
        MpiRunLauncher,
        SimpleLauncher,
        SingleNodeLauncher,
        SrunLauncher,
    )

    return {"single": SingleNodeLauncher, "simple": SimpleLauncher, "srun": SrunLauncher,
            "mpiexec": MpiExecLauncher, "mpirun": MpiRunLauncher,
            "aprun": AprunLauncher}[name]()


#: What the MPI pilots of a typed provider change of its keywords.
_MPI_OVERRIDES = ("launcher", "nodes_per_block", "init_blocks", "min_blocks", "max_blocks")


def _provider(s: ParslSettings, launcher: Any, nodes: int, init: int, low: int, high: int,
              worker_init: str | None = None) -> Any:
    """Parsl's provider for `s.provider` with this block shape."""
    return polled(_new_provider(s, launcher, nodes, init, low, high, worker_init),
                  s.status_poll_period)


def _typed_htex_provider(s: ParslSettings) -> Any:
    """HTEX's provider built exactly as the typed `engine.provider` mapping says."""
    assert s.provider_spec is not None
    return polled(providers.provider_from_spec(s.provider_spec, **_typed_pbs_place(s)),
                  s.status_poll_period)


def _typed_pbs_place(s: ParslSettings) -> dict[str, Any]:
    """A typed PBSProProvider's pilots scatter too, unless its scheduler_options place them."""
    spec = s.provider_spec or {}
    if str(spec.get("type", "")).rsplit(".", 1)[-1] != "PBSProProvider":
        return {}
    own = str(spec.get("scheduler_options") or "")
    if "place=" in own:
        return {}
    return {"scheduler_options": "\n".join(x for x in ("#PBS -l place=scatter", own) if x)}


def _typed_mpi_provider(s: ParslSettings, launcher: Any, worker_init: str | None) -> Any:
    """The typed provider's class for MPI pilots: SimpleLauncher, the mpi block shape."""
    assert s.provider_spec is not None
    overrides: dict[str, Any] = dict(zip(_MPI_OVERRIDES, (
        launcher, s.mpi.nodes_per_block, 0, 0, s.mpi.max_blocks), strict=True))
    if worker_init is not None:
        overrides["worker_init"] = worker_init
    overrides.update(_typed_pbs_place(s))
    return polled(providers.provider_from_spec(s.provider_spec, **overrides),
                  s.status_poll_period)


def _new_provider(s: ParslSettings, launcher: Any, nodes: int, init: int, low: int, high: int,
                  worker_init: str | None) -> Any:
    if s.provider == "local":
        from parsl.providers import LocalProvider

        return LocalProvider(nodes_per_block=nodes, launcher=launcher, init_blocks=init,
                             min_blocks=low, max_blocks=high,
                             worker_init=s.worker_init if worker_init is None else worker_init)
    if s.provider == "slurm":
        from parsl.providers import SlurmProvider

        return SlurmProvider(partition=s.partition, account=s.account, qos=s.qos,
                             nodes_per_block=nodes, cores_per_node=s.cores_per_node,
                             init_blocks=init, min_blocks=low, max_blocks=high,
                             walltime=s.walltime, scheduler_options=s.scheduler_options,
                             worker_init=s.worker_init, exclusive=s.exclusive,
                             launcher=launcher)
    from parsl.providers import PBSProProvider

    return PBSProProvider(account=s.account, queue=s.partition,
                          scheduler_options=pbs_pilot_options(s), worker_init=s.worker_init,
                          nodes_per_block=nodes, cpus_per_node=s.cores_per_node or 1,
                          init_blocks=init, min_blocks=low, max_blocks=high,
                          launcher=launcher, walltime=s.walltime)


def pbs_pilot_options(s: ParslSettings) -> str:
    """`place=scatter` (`:excl` when exclusive) before the admin's own PBS lines.

    Parsl's PBSProProvider asks only `select=N:ncpus=C`; PBS may then pack a block's chunks
    onto one host, and `ncpus=1` (no cores_per_node) shares the node with other jobs. An
    admin's own `place=` in scheduler_options wins.
    """
    if "place=" in s.scheduler_options:
        return s.scheduler_options
    place = "scatter:excl" if s.exclusive else "scatter"
    return "\n".join(line for line in (f"#PBS -l place={place}", s.scheduler_options) if line)


def _error_handler(threshold: int) -> Any:
    """Give up on an executor only after `threshold` blocks in a row failed (e.g. a broken
    worker_init); one scancelled pilot must not poison the endpoint."""
    from parsl.jobs.error_handlers import windowed_error_handler

    def handler(executor: Any, status: dict) -> None:
        if len(status) >= threshold:
            windowed_error_handler(executor, status, threshold)

    return handler


def version_label(version: str) -> str:
    """The label of the HTEX whose workers run Python `version`."""
    return f"{HTEX_LABEL}-py{version}"


def worker_pool_cmd(s: ParslSettings, in_container: bool, python: str | None = None) -> str:
    """Parsl's worker-pool command run by `python` (default `s.python`, the endpoint's own
    Python by default, so Parsl's scripts need not be on PATH), inside the configured
    container if asked. Another version's pool ignores the endpoint's PYTHONPATH (-E)."""
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    script, _, rest = DEFAULT_LAUNCH_CMD.partition(" ")
    assert script == "process_worker_pool.py"
    exe = shell.quote(python or s.python) + (" -E" if python else "")
    cmd = f"{exe} -m parsl.executors.high_throughput.process_worker_pool {rest}"
    if not (in_container and s.container):
        return cmd
    c = s.container
    binds = [Bind.parse(b) for b in c.get("binds", [])]
    prefix = shell.join(container_argv(c["type"], c["image"], binds, None, c.get("options")))
    return f"{prefix} {cmd}"


def _local_mpi_init(s: ParslSettings, run_dir: Path) -> str | None:
    """Parsl's MPI mode finds its nodes in SLURM_NODELIST or PBS_NODEFILE only: on the local
    provider, point PBS_NODEFILE at a file naming this host."""
    if s.provider != "local":
        return None
    nodefile = run_dir / "local_nodefile"
    nodefile.write_text(socket.gethostname() + "\n")
    own = (s.provider_spec or {}).get("worker_init", "") if s.provider_spec else s.worker_init
    return f"{own}\nexport PBS_NODEFILE={shell.quote(str(nodefile))}"


def _no_zero_scale_in(cls: type) -> type:
    """`cls` whose scale_in(0, max_idletime) does nothing: Parsl 2026.10's htex_auto_scale
    asks for 0 blocks when slots outnumber tasks, and HTEX.scale_in then kills every block
    without a connected manager (a pilot still pending) - a new pilot never starts."""

    class Guarded(cls):
        def scale_in(self, blocks: int, max_idletime: float | None = None) -> list[str]:
            if blocks <= 0:
                return []
            return super().scale_in(blocks, max_idletime)

    Guarded.__name__ = Guarded.__qualname__ = cls.__name__
    return Guarded


def build_config(s: ParslSettings, run_dir: Path) -> Any:
    """The parsl.Config: HTEX (+ MPIExecutor when enabled), autoscaling by idle time."""
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, MPIExecutor
    from parsl.launchers import SimpleLauncher

    htex_class = _no_zero_scale_in(HighThroughputExecutor)
    mpi_class = _no_zero_scale_in(MPIExecutor)

    common: dict[str, Any] = {
        "heartbeat_period": s.heartbeat_period, "heartbeat_threshold": s.heartbeat_threshold,
        "poll_period": int(s.poll_period), "worker_logdir_root": str(run_dir / "workers"),
        "block_error_handler": _error_handler(s.block_failure_threshold),
    }
    if s.address:
        common["address"] = s.address
    elif s.provider == "local":
        common["address"] = "127.0.0.1"
    htex = htex_class(
        label=HTEX_LABEL, max_workers_per_node=s.max_workers_per_node, cores_per_worker=1e-6
        if s.max_workers_per_node else 1.0, launch_cmd=worker_pool_cmd(s, True),
        provider=_typed_htex_provider(s) if s.provider_spec else _provider(
            s, _block_launcher(s.launcher), s.nodes_per_block, s.init_blocks, s.min_blocks,
            s.max_blocks), **common)
    executors = [htex]
    interchange = {htex: sys.executable}
    for version, python in sorted(s.python_interpreters.items()):
        if version == interpreters.own().version:
            continue
        # Blocks of another version start only when its tasks wait (no init/min blocks).
        other = htex_class(
            label=version_label(version), max_workers_per_node=s.max_workers_per_node,
            cores_per_worker=1e-6 if s.max_workers_per_node else 1.0,
            launch_cmd=worker_pool_cmd(s, True, python),
            provider=_typed_htex_provider(s) if s.provider_spec else _provider(
                s, _block_launcher(s.launcher), s.nodes_per_block, 0, 0, s.max_blocks),
            **common)
        executors.append(other)
        interchange[other] = python
    if s.mpi.enabled:
        executors.append(mpi_class(
            label=MPI_LABEL, max_workers_per_block=s.mpi.max_workers_per_block,
            launch_cmd=worker_pool_cmd(s, False),
            mpi_launcher="srun" if s.provider == "slurm" else "mpiexec",
            provider=_typed_mpi_provider(s, SimpleLauncher(), _local_mpi_init(s, run_dir))
            if s.provider_spec else _provider(s, SimpleLauncher(), s.mpi.nodes_per_block, 0, 0,
                                              s.mpi.max_blocks, _local_mpi_init(s, run_dir)),
            **common))
    for ex in executors:  # set after init: MPIExecutor's type hint refuses a list here
        python = interchange.get(ex, sys.executable)
        ex.interchange_launch_cmd = [python, *(["-E"] if python != sys.executable else []),
                                     "-m", "parsl.executors.high_throughput.interchange"]
    return Config(executors=executors, run_dir=str(run_dir), strategy="htex_auto_scale",
                  strategy_period=s.strategy_period, max_idletime=s.max_idletime,
                  retries=s.retries, initialize_logging=True, usage_tracking=0)

