"""Globus Compute's endpoint configuration read as fnrelay's: keys, engines, notices.

Sites keep the config.yaml and user_config_template.yaml.j2 they tuned for Globus Compute (GC).
`translate_endpoint` and `translate_manager` turn GC's keys into fnrelay's before the model
validates them: what has a counterpart maps to it (GlobusComputeEngine -> the parsl engine,
whose typed `provider:` section is GC's own), what has no meaning here is dropped with a
one-line notice (null values, GC's defaults for unset template variables, say nothing), and
what would widen who may run code if dropped (allowed_functions, authentication_policy, PAM,
high assurance) is refused: a site's restriction never silently disappears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fnrelay.errors import ConfigurationError

log = logging.getLogger(__name__)

Notice = Callable[[str], None]

#: GC endpoint keys with no counterpart here, and why they may go.
IGNORED_KEYS = {
    "heartbeat_threshold": "the broker decides when a silent endpoint is lost",
    "idle_heartbeats_soft": "a child endpoint stops after its manager's idle_timeout; a single "
                            "endpoint runs until stopped",
    "idle_heartbeats_hard": "a child endpoint stops after its manager's idle_timeout",
    "endpoint_setup": "it runs only before a multi-user child starts (as its worker_init)",
    "endpoint_teardown": "fnrelay runs no teardown commands",
    "log_dir": "the endpoint logs to endpoint.log in its directory",
    "stdout": "the endpoint logs to endpoint.log in its directory",
    "stderr": "the endpoint logs to endpoint.log in its directory",
    "debug": "use FNRELAY_LOG_LEVEL=DEBUG",
    "amqp_port": "the broker's registration answer gives the AMQP URL",
    "environment": "broker_url names the service",
    "local_compute_services": "broker_url names the service",
    "subscription_id": "fnrelay has no subscriptions",
    "admins": "only the endpoint's owner manages it at the broker",
    "public": "who may use an endpoint is its sharing at the broker",
    "email": "kept out of fnrelay's config (contact address)",
    "audit_log_path": "the broker keeps every task's history",
    "mu_child_ep_grace_period_s": "idle_timeout decides when a child stops",
    "multi_user": "GC's layout decides (a template beside config.yaml)",
}
#: GC keys that restrict who or what may run: refused rather than dropped.
REFUSED_KEYS = {
    "allowed_functions": "set the allowlist at the broker instead (endpoint metadata "
                         "'allowed_functions' when sharing the endpoint)",
    "authentication_policy": "fnrelay has no Globus Auth policies: the broker's accounts and "
                             "the identity mapping decide who may run tasks",
    "high_assurance": "fnrelay has no high-assurance endpoints",
    "pam": "fnrelay runs no PAM account checks",
}
#: GC keys a single endpoint takes as they are.
SAME_KEYS = frozenset({"display_name", "heartbeat_period"})

#: GC engine types and the fnrelay engine each runs as.
ENGINE_TYPES = {"GlobusComputeEngine": "parsl", "GlobusMPIEngine": "parsl",
                "HighThroughputEngine": "parsl", "ThreadPoolEngine": "local",
                "ProcessPoolEngine": "local"}
#: Keys of GC's Parsl-based engines the parsl engine takes as they are.
PARSL_SAME = frozenset({"provider", "max_workers_per_node", "max_workers", "heartbeat_period",
                        "heartbeat_threshold", "poll_period"})
#: Keys of GC's engines that fnrelay does not pass on, and what happens instead.
ENGINE_IGNORED = {
    "label": "fnrelay names its executors itself",
    "worker_debug": "worker logs are Parsl's defaults",
    "encrypted": "Parsl's interchange traffic stays on the endpoint host's network",
    "run_in_sandbox": "the parsl engine runs tasks in Parsl's working directory",
    "working_dir": "the parsl engine runs tasks in Parsl's working directory",
    "run_dir": "Parsl's run directory is under the endpoint's directory",
    "available_accelerators": "GPU pinning per worker is not passed to Parsl",
    "cores_per_worker": "workers per node come from max_workers_per_node",
    "mem_per_worker": "workers per node come from max_workers_per_node",
    "cpu_affinity": "Parsl's default affinity applies",
    "prefetch_capacity": "the endpoint's prefetch setting applies",
    "worker_logdir_root": "worker logs are Parsl's defaults",
    "address_probe_timeout": "Parsl's default applies",
    "launch_cmd": "fnrelay starts Parsl's workers itself",
    "interchange_launch_cmd": "fnrelay starts Parsl's interchange itself",
    "max_retries_on_system_failure": "",  # mapped to max_retries, see _parsl_engine
}
#: GC MPI launcher names -> fnrelay's (wrappers' LAUNCHERS).
MPI_LAUNCHERS = {"srun": "srun", "mpiexec": "mpich", "mpirun": "openmpi", "aprun": "aprun"}


def is_globus_engine(engine: Any) -> bool:
    return isinstance(engine, Mapping) and engine.get("type") in ENGINE_TYPES


def _set(value: Any) -> bool:
    """Whether a GC value says something (GC's unset template variables render as null)."""
    return value not in (None, "", [], {}, False)


def _drop(key: str, value: Any, why: str, source: str, notice: Notice) -> None:
    if _set(value):
        notice(f"{source}: {key!r} is ignored by fnrelay ({why})")


def _refuse_restrictions(data: Mapping[str, Any], source: str) -> None:
    for key, why in REFUSED_KEYS.items():
        if _set(data.get(key)) and not (key == "pam" and not _enabled(data[key])):
            raise ConfigurationError(f"{source}: {key!r} is not supported by fnrelay: {why}; "
                                     "remove it to run this endpoint here")


def _enabled(pam: Any) -> bool:
    return not isinstance(pam, Mapping) or bool(pam.get("enable"))


def translate_endpoint(data: Mapping[str, Any], source: str,
                       notice: Notice | None = None) -> dict[str, Any]:
    """A GC endpoint's (or rendered child's) settings as fnrelay's; fnrelay keys pass."""
    notice = notice or log.warning
    _refuse_restrictions(data, source)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in IGNORED_KEYS:
            _drop(key, value, IGNORED_KEYS[key], source, notice)
        elif key in REFUSED_KEYS:
            continue  # unset: _refuse_restrictions let it through
        elif key == "engine" and is_globus_engine(value):
            engine, retries = translate_engine(value, source, notice)
            out["engine"] = engine
            if retries is not None:
                out.setdefault("max_retries", retries)
        else:
            out[key] = value
    return out


def translate_engine(engine: Mapping[str, Any], source: str, notice: Notice | None = None
                     ) -> tuple[dict[str, Any], int | None]:
    """(fnrelay engine mapping, max_retries or None) for a GC `engine:` section."""
    notice = notice or log.warning
    kind = engine["type"]
    if ENGINE_TYPES[kind] == "local":
        return _local_engine(engine, source, notice), None
    return _parsl_engine(engine, source, notice)


def _local_engine(engine: Mapping[str, Any], source: str, notice: Notice) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "local"}
    for key, value in engine.items():
        if key == "max_workers" and value is not None:
            out["max_workers"] = value
        elif key not in ("type", "max_workers"):
            _drop(f"engine.{key}", value, "the local engine takes max_workers only",
                  source, notice)
    if engine["type"] == "ThreadPoolEngine":
        notice(f"{source}: 'engine.type' ThreadPoolEngine runs as fnrelay's local engine: "
               "worker processes, not threads")
    return out


def _parsl_engine(engine: Mapping[str, Any], source: str, notice: Notice
                  ) -> tuple[dict[str, Any], int | None]:
    out: dict[str, Any] = {"type": "parsl",
                           "provider": dict(engine.get("provider") or {"type": "LocalProvider"})}
    retries = engine.get("max_retries_on_system_failure")
    for key, value in engine.items():
        if key in ("type", "provider", "max_retries_on_system_failure", "mpi_launcher"):
            continue
        if key in PARSL_SAME:
            if value is not None:
                out[key] = value
        elif key == "address":
            _address(value, out, source, notice)
        elif key == "strategy":
            _strategy(value, out, source, notice)
        elif key == "job_status_kwargs":
            _job_status(value, out, source, notice)
        elif key in ENGINE_IGNORED:
            _drop(f"engine.{key}", value, ENGINE_IGNORED[key], source, notice)
        else:
            known = PARSL_SAME | set(ENGINE_IGNORED) | {"address", "strategy", "job_status_kwargs"}
            raise ConfigurationError(f"{source}: unknown key 'engine.{key}' for engine "
                                     f"{engine['type']} (fnrelay reads: "
                                     f"{', '.join(sorted(known))})")
    if engine["type"] == "GlobusMPIEngine":
        launcher = engine.get("mpi_launcher", "mpiexec")
        if launcher not in MPI_LAUNCHERS:
            raise ConfigurationError(f"{source}: 'engine.mpi_launcher' must be one of "
                                     f"{', '.join(MPI_LAUNCHERS)}, got {launcher!r}")
        out["mpi"] = {"enabled": True, "launcher": MPI_LAUNCHERS[launcher]}
    else:
        out["mpi"] = {"enabled": False}
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)):
        raise ConfigurationError(f"{source}: 'engine.max_retries_on_system_failure' must be "
                                 f"an integer, got {retries!r}")
    return out, retries


def _address(value: Any, out: dict[str, Any], source: str, notice: Notice) -> None:
    """GC's `address` is a string or `{type: address_by_interface, ifname: ...}` (Parsl's
    address functions); resolved here, as GC does when it builds the engine."""
    if value is None or isinstance(value, str):
        if value:
            out["address"] = value
        return
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise ConfigurationError(f"{source}: 'engine.address' must be a host, an address or "
                                 f"{{type: address_by_interface, ifname: ...}}, got {value!r}")
    import parsl.addresses

    name = value["type"]
    fn = getattr(parsl.addresses, name, None) if name.startswith("address_by_") else None
    if fn is None:
        raise ConfigurationError(f"{source}: 'engine.address.type' {name!r} is not one of "
                                 "Parsl's address_by_* functions")
    args = {k: v for k, v in value.items() if k != "type"}
    try:
        out["address"] = str(fn(**args))
    except Exception as e:  # noqa: BLE001 - OSError, KeyError...: the interface is not here
        notice(f"{source}: 'engine.address' {name}({args}) failed on this host ({e}); "
               "Parsl picks the address")


def _strategy(value: Any, out: dict[str, Any], source: str, notice: Notice) -> None:
    if isinstance(value, Mapping) and value.get("max_idletime") is not None:
        out["max_idletime"] = value["max_idletime"]
    elif _set(value) and value not in ("simple", {"type": "SimpleStrategy"}):
        notice(f"{source}: 'engine.strategy' {value!r} is ignored by fnrelay (blocks scale "
               "with Parsl's simple strategy)")


def _job_status(value: Any, out: dict[str, Any], source: str, notice: Notice) -> None:
    if not isinstance(value, Mapping):
        _drop("engine.job_status_kwargs", value, "it must be a mapping", source, notice)
        return
    for key in ("max_idletime", "strategy_period"):
        if value.get(key) is not None:
            out[key] = value[key]
    rest = {k: v for k, v in value.items() if k not in ("max_idletime", "strategy_period")}
    _drop("engine.job_status_kwargs", rest, "only max_idletime and strategy_period apply",
          source, notice)


# --- managers ----------------------------------------------------------------------------------
#: GC manager keys and fnrelay's.
MANAGER_RENAMED = {"identity_mapping_config_path": "identity_mapping"}
#: GC manager keys that name files fnrelay keeps at fixed names in the endpoint's directory.
MANAGER_FILES = {"user_config_template_path": "user_config_template.yaml.j2",
                 "user_config_schema_path": "user_config_schema.json"}


def translate_manager(data: Mapping[str, Any], source: str,
                      notice: Notice | None = None) -> dict[str, Any]:
    """A GC manager config (4.x: `display_name: null` and what `configure` added) as
    fnrelay's manager settings (`multi_user: true`)."""
    notice = notice or log.warning
    _refuse_restrictions(data, source)
    out: dict[str, Any] = {"multi_user": True}
    for key, value in data.items():
        if key in MANAGER_RENAMED:
            if value is not None:
                out[MANAGER_RENAMED[key]] = value
        elif key in MANAGER_FILES:
            if _set(value) and not str(value).endswith(MANAGER_FILES[key]):
                raise ConfigurationError(
                    f"{source}: {key!r}: fnrelay reads {MANAGER_FILES[key]} in the endpoint's "
                    f"directory; copy {value} there (fnrelay-endpoint configure NAME "
                    "--from-globus-compute DIR does)")
        elif key in IGNORED_KEYS and key != "multi_user":
            _drop(key, value, IGNORED_KEYS[key], source, notice)
        elif key in REFUSED_KEYS or key == "multi_user":
            continue
        else:
            out[key] = value
    return out
