"""An endpoint's files and settings: FNRELAY_HOME/endpoints/NAME/{config.yaml, endpoint.json, ...}.

The endpoint id is made once by `configure` and kept in endpoint.json forever, so the
endpoint's queue (and the tasks waiting in it) survive restarts.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fnrelay.config import fnrelay_home, local_stack_dir, resolve_credentials
from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.config import globus
from fnrelay_endpoint.config import validators as check
from fnrelay_endpoint.engines.base import engine_class

DEFAULT_MAX_RETRIES = 3
DEFAULT_RESULT_SIZE_LIMIT = 10 * 1024 * 1024
DEFAULT_JOURNAL_RETENTION = 7 * 86400.0

#: The keys of a normal endpoint's config.yaml, and of a multi-user manager's.
ENDPOINT_KEYS = frozenset({"broker_url", "token", "engine", "prefetch", "heartbeat_period",
                           "display_name", "max_retries", "result_size_limit",
                           "result_blob_limit", "journal_retention"})
MANAGER_KEYS = frozenset({"multi_user", "broker_url", "token", "display_name", "idle_timeout",
                          "max_children", "identity_mapping", "min_uid", "child_python",
                          "heartbeat_period", "template_dialect"})
#: How a manager's user_config_template.yaml.j2 quotes user values: fnrelay's (the template
#: writes `| tojson`) or Globus Compute's (user strings arrive JSON-quoted, `shell_escape`).
TEMPLATE_DIALECTS = ("fnrelay", "globus-compute")
#: The file whose presence beside a config.yaml without `engine:` makes it a Globus Compute
#: 4.x manager (GC's own rule: 4.x endpoints always run as managers).
GC_TEMPLATE_FILE = "user_config_template.yaml.j2"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def endpoints_dir() -> Path:
    return fnrelay_home() / "endpoints"


def check_name(name: str) -> str:
    """Endpoint names become directory names: keep them plain."""
    if not _NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid endpoint name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 64, not starting with a punctuation mark)"
        )
    return name


def _in_local_stack(name: str) -> str:
    """How to reach endpoint `name` if the local stack has it (a shell that did not evaluate
    `fnrelay local up` looks under ~/.fnrelay, not the stack's home), else ""."""
    home = local_stack_dir() / "home"
    if home == fnrelay_home() or not (home / "endpoints" / name / "config.yaml").exists():
        return ""
    return (f"the local stack has one (in {home}): run `eval \"$(fnrelay local up)\"` in "
            f"this shell, or set FNRELAY_HOME={home}")


@dataclass(frozen=True)
class EndpointPaths:
    """Where one endpoint keeps its files."""

    name: str
    dir: Path

    @classmethod
    def of(cls, name: str) -> EndpointPaths:
        return cls(check_name(name), endpoints_dir() / name)

    config = property(lambda self: self.dir / "config.yaml")
    identity = property(lambda self: self.dir / "endpoint.json")
    journal = property(lambda self: self.dir / "journal.sqlite")
    log = property(lambda self: self.dir / "endpoint.log")
    pid = property(lambda self: self.dir / "endpoint.pid")
    ready = property(lambda self: self.dir / "endpoint.ready")

    def exists(self) -> bool:
        return self.config.exists()

    def require(self) -> EndpointPaths:
        """Self, or a clear error naming the unknown endpoint."""
        if not self.exists():
            raise ConfigurationError(
                f"no endpoint named {self.name!r} in {endpoints_dir()}; "
                + (_in_local_stack(self.name)
                   or f"create it with `fnrelay-endpoint configure {self.name}`"))
        return self

    def endpoint_id(self) -> str:
        if not self.identity.exists():
            raise ConfigurationError(
                f"endpoint {self.name!r} has no id yet: the broker gives it one when it is "
                f"first started (`fnrelay-endpoint start {self.name}`)")
        try:
            return str(uuid.UUID(json.loads(self.identity.read_text())["endpoint_id"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigurationError(f"cannot read the endpoint id from {self.identity}: {e}") \
                from e


@dataclass
class EndpointConfig:
    """Settings of one endpoint, from its config.yaml."""

    broker_url: str
    token: str | None = None
    engine: dict[str, Any] = field(default_factory=lambda: {"type": "local",
                                                            "max_workers": os.cpu_count() or 1})
    prefetch: int = 512
    heartbeat_period: float | None = None
    display_name: str | None = None
    #: Re-runs of a task after an infrastructure failure (worker lost, endpoint stopped while
    #: it ran, node failure); a task's own `max_retries` wins. User exceptions never retry.
    max_retries: int = DEFAULT_MAX_RETRIES
    #: Largest serialized result in bytes; a larger one fails the task with a clear error.
    result_size_limit: int = DEFAULT_RESULT_SIZE_LIMIT
    #: Largest result in bytes sent as a blob to a broker with a blob store (results over
    #: `result_size_limit` are too big for a message); 0: never (they fail, as without a store).
    result_blob_limit: int = 0
    #: Seconds the journal keeps published results before pruning them.
    journal_retention: float = DEFAULT_JOURNAL_RETENTION

    @property
    def max_workers(self) -> int | None:
        """Workers of a local engine; None for engines whose scheduler decides."""
        workers = self.engine.get("max_workers")
        return int(workers) if workers is not None else None

    def resolved_token(self) -> str:
        return _resolved_token(self.token, self.broker_url)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> EndpointConfig:
        """Validate `data`; errors name the file and the bad key."""
        if not isinstance(data, dict):
            raise ConfigurationError(f"{source}: expected a mapping of settings")
        data = globus.translate_endpoint(data, source)
        check.known_keys(data, ENDPOINT_KEYS, source)
        url = data.get("broker_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"{source}: 'broker_url' must be an http(s) URL, got {url!r}")
        token = data.get("token")
        if token is not None and (not isinstance(token, str) or not token):
            raise ConfigurationError(f"{source}: 'token' must be a non-empty string")
        name = data.get("display_name")
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"{source}: 'display_name' must be a string")
        return cls(
            broker_url=url.rstrip("/"), token=token,
            engine=_engine(data.get("engine"), source),
            prefetch=check.integer(data.get("prefetch", 512), "prefetch", source, low=1),
            heartbeat_period=_heartbeat(data.get("heartbeat_period"), source),
            display_name=name,
            max_retries=check.integer(data.get("max_retries", DEFAULT_MAX_RETRIES),
                                      "max_retries", source, low=0, high=100),
            result_size_limit=check.integer(
                data.get("result_size_limit", DEFAULT_RESULT_SIZE_LIMIT), "result_size_limit",
                source, low=1),
            result_blob_limit=check.integer(data.get("result_blob_limit", 0),
                                            "result_blob_limit", source, low=0),
            journal_retention=float(check.integer(
                data.get("journal_retention", int(DEFAULT_JOURNAL_RETENTION)),
                "journal_retention", source, low=1)),
        )

    @classmethod
    def load(cls, path: Path) -> EndpointConfig:
        return cls.from_dict(_endpoint_data(_read_config(path)), str(path))


def _default_broker_url(data: dict[str, Any]) -> dict[str, Any]:
    """A Globus Compute config names no broker: the environment's or `fnrelay login`'s."""
    if data.get("broker_url"):
        return data
    from fnrelay_endpoint.config.scaffold import default_broker_url

    return {**data, "broker_url": default_broker_url()}


def _endpoint_data(data: Any) -> Any:
    """GC's older single-endpoint config.yaml (its engine a GC type) gets a broker URL."""
    if isinstance(data, dict) and globus.is_globus_engine(data.get("engine")):
        return _default_broker_url(data)
    return data


def _heartbeat(value: Any, source: str) -> float | None:
    return check.seconds_or_null(value, "heartbeat_period", source,
                                 "the period the broker gives at registration")


def _engine(value: Any, source: str) -> dict[str, Any]:
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ConfigurationError(f"{source}: 'engine' must be a mapping (e.g. type: local)")
    kind = value.get("type", "local")
    return engine_class(kind, source).validate_config({**value, "type": kind}, source)





# --- multi-user endpoints (managers) -----------------------------------------------------------
def is_multi_user(path: Path) -> bool:
    """True if the config file at `path` is a multi-user manager's: ``multi_user: true``, or
    Globus Compute 4.x's layout (see `is_globus_manager`)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return _is_manager(data, path)


def _is_manager(data: Any, path: Path) -> bool:
    data = data or {}
    return isinstance(data, dict) and (data.get("multi_user") is True
                                       or is_globus_manager(data, path))


def is_globus_manager(data: dict[str, Any], path: Path) -> bool:
    """A Globus Compute 4.x manager config: no `engine:`, not fnrelay's `multi_user: true`,
    and a user config template beside it."""
    return ("engine" not in data and data.get("multi_user") is not True
            and data.get("multi_user") is not False and (path.parent / GC_TEMPLATE_FILE).exists())


def _resolved_token(token: str | None, broker_url: str) -> str:
    """The token from the config, else FNRELAY_TOKEN, else `fnrelay login`'s credentials."""
    if token:
        return token
    try:
        return resolve_credentials(broker_url=broker_url).token
    except ConfigurationError:
        raise ConfigurationError(
            "no token: set 'token' in the endpoint's config.yaml, set FNRELAY_TOKEN, or run "
            "`fnrelay login --broker-url URL --token TOKEN`") from None


@dataclass
class ManagerConfig:
    """Settings of a multi-user endpoint (a manager of per-user child endpoints)."""

    broker_url: str
    token: str | None = None
    display_name: str | None = None
    idle_timeout: float = 600.0
    max_children: int = 32
    identity_mapping: str = "identity_mapping.yaml"
    min_uid: int = 1000
    child_python: str | None = None
    heartbeat_period: float | None = None
    template_dialect: str = "fnrelay"

    def resolved_token(self) -> str:
        return _resolved_token(self.token, self.broker_url)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> ManagerConfig:
        if not isinstance(data, dict) or data.get("multi_user") is not True:
            raise ConfigurationError(f"{source}: not a multi-user config (multi_user: true)")
        data = globus.translate_manager(data, source)  # GC 2.x managers say multi_user too
        check.known_keys(data, MANAGER_KEYS, source)
        dialect = check.one_of(data.get("template_dialect", "fnrelay"), "template_dialect",
                               source, TEMPLATE_DIALECTS)
        base = EndpointConfig.from_dict(
            {k: data[k] for k in ("broker_url", "token", "display_name", "heartbeat_period")
             if k in data}, source)
        idle = check.seconds(data.get("idle_timeout", 600), "idle_timeout", source)
        min_uid = check.integer(data.get("min_uid", 1000), "min_uid", source, low=1,
                                why="root is always refused")
        for key in ("identity_mapping", "child_python"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigurationError(f"{source}: {key!r} must be a path")
        return cls(
            broker_url=base.broker_url, token=base.token, display_name=base.display_name,
            idle_timeout=idle,
            max_children=check.integer(data.get("max_children", 32), "max_children", source,
                                       low=1),
            identity_mapping=data.get("identity_mapping") or "identity_mapping.yaml",
            min_uid=min_uid, child_python=data.get("child_python"),
            heartbeat_period=base.heartbeat_period, template_dialect=dialect,
        )

    @classmethod
    def load(cls, path: Path) -> ManagerConfig:
        return cls.from_dict(_manager_data(_read_config(path), path), str(path))

    def template_context(self) -> dict[str, Any]:
        """What a user config template sees as `_GC.parent_config`: these settings, no
        token."""
        return {k: v for k, v in vars(self).items() if k != "token"}


def _manager_data(data: Any, path: Path) -> Any:
    """A Globus Compute manager config as fnrelay's (its template in GC's dialect, the broker
    URL from the environment or `fnrelay login` when the file has none)."""
    if not isinstance(data, dict):
        return data
    if not (is_globus_manager(data, path) or "broker_url" not in data):
        return data  # fnrelay's own (its scaffold always writes broker_url)
    out = {**data, "multi_user": True}
    out.setdefault("template_dialect", "globus-compute")
    return _default_broker_url(out)


def _read_config(path: Path) -> Any:
    """The YAML document at `path` ({} when empty), or a ConfigurationError naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigurationError(f"cannot read {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigurationError(f"{path}: invalid YAML: {yaml_problem(e)}") from e
    return data or {}


def yaml_problem(e: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: PyYAML's own message spans lines and draws a caret."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:
        return " ".join(str(e).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None:
        text += f" ({context} from line {start.line + 1})"
    return text


def load_any(path: Path) -> EndpointConfig | ManagerConfig:
    """The config at `path`, of a normal endpoint or of a multi-user manager (read once)."""
    data = _read_config(path)
    if _is_manager(data, path):
        return ManagerConfig.from_dict(_manager_data(data, path), str(path))
    return EndpointConfig.from_dict(_endpoint_data(data), str(path))


