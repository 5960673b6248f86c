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

from fnrelay.config import (
    ENV_BROKER_URL,
    credentials_path,
    fnrelay_home,
    private_mkdir,
    resolve_credentials,
    write_private,
)
from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.engines.base import engine_class

DEFAULT_MAX_RETRIES = 3
DEFAULT_RESULT_SIZE_LIMIT = 10 * 1024 * 1024
DEFAULT_JOURNAL_RETENTION = 7 * 86400.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def endpoints_dir() -> Path:
    return fnrelay_home() / "endpoints"


def check_name(name: str) -> str:
    """Endpoint names become directory names: keep them plain."""
    if not _NAME_RE.match(name):
        raise ConfigurationError(
            f"invalid endpoint name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 64, not starting with a punctuation mark)"
        )
    return name


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
                f"create it with `fnrelay-endpoint configure {self.name}`"
            )
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
        known = {"broker_url", "token", "engine", "prefetch", "heartbeat_period", "display_name",
                 "max_retries", "result_size_limit", "result_blob_limit",
                 "journal_retention"}
        for key in data:
            if key not in known:
                raise ConfigurationError(
                    f"{source}: unknown key {key!r} (known: {', '.join(sorted(known))})")
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
            prefetch=_positive_int(data.get("prefetch", 512), "prefetch", source),
            heartbeat_period=_heartbeat(data.get("heartbeat_period"), source),
            display_name=name,
            max_retries=_count(data.get("max_retries", DEFAULT_MAX_RETRIES), "max_retries",
                               source),
            result_size_limit=_positive_int(
                data.get("result_size_limit", DEFAULT_RESULT_SIZE_LIMIT), "result_size_limit",
                source),
            result_blob_limit=_non_negative_int(data.get("result_blob_limit", 0),
                                                "result_blob_limit", source),
            journal_retention=float(_positive_int(
                data.get("journal_retention", int(DEFAULT_JOURNAL_RETENTION)),
                "journal_retention", source)),
        )

    @classmethod
    def load(cls, path: Path) -> EndpointConfig:
        return cls.from_dict(_read_config(path), str(path))


def _positive_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{source}: {key!r} must be a positive integer, got {value!r}")
    return value


def _non_negative_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{source}: {key!r} must be an integer >= 0, got {value!r}")
    return value


def _count(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ConfigurationError(
            f"{source}: {key!r} must be an integer from 0 to 100, got {value!r}")
    return value


def _heartbeat(value: Any, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(
            f"{source}: 'heartbeat_period' must be a positive number of seconds, got {value!r}")
    return float(value)


def _engine(value: Any, source: str) -> dict[str, Any]:
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ConfigurationError(f"{source}: 'engine' must be a mapping (e.g. type: local)")
    kind = value.get("type", "local")
    return engine_class(kind, source).validate_config({**value, "type": kind}, source)


def default_broker_url() -> str | None:
    """FNRELAY_BROKER_URL, else the URL saved by `fnrelay login`."""
    url = os.environ.get(ENV_BROKER_URL)
    if url:
        return url
    try:
        return json.loads(credentials_path().read_text()).get("broker_url")
    except (OSError, ValueError, AttributeError):
        return None


_TEMPLATE = """\
# fnrelay endpoint {name!r}; edit, then `fnrelay-endpoint start {name}`.

# The broker's REST address (the endpoint only makes outbound connections).
broker_url: {broker_url}

# The owner's token. Default: FNRELAY_TOKEN, else the credentials of `fnrelay login`.
# token: ...

# Name shown by the broker (default: the endpoint's local name).
display_name: {name}

engine:
  # local: a warm pool of worker processes on this machine.
  type: local
  # Tasks that run at once (default: the number of CPUs).
  max_workers: {max_workers}

# Tasks the broker hands over before the endpoint has journaled earlier ones.
prefetch: 512

# Seconds between heartbeats; default: what the broker says at registration.
# heartbeat_period: 10

# Re-runs after an infrastructure failure (worker lost, endpoint killed, node failure);
# a task's own max_retries wins. A task's own exception is never retried.
# max_retries: 3

# Largest result in bytes (default 10 MB): a larger one fails its task with a clear error.
# result_size_limit: 10485760

# Larger results, up to this many bytes, go to the broker's blob store when the broker has
# one (`fnrelay-broker serve --blob-store`); 0 (default): they fail like results over the limit.
# result_blob_limit: 1073741824

# Seconds the journal keeps results the broker confirmed (default 7 days).
# journal_retention: 604800
"""


def _new_endpoint(name: str, broker_url: str | None, force: bool) -> tuple[EndpointPaths, str]:
    """Checks shared by `configure` and `configure_multi_user`: the name is free (or `force`)
    and a broker URL is known. Returns the paths and the broker URL."""
    paths = EndpointPaths.of(name)
    if paths.config.exists() and not force:
        raise ConfigurationError(
            f"endpoint {name!r} already exists ({paths.dir}); pass --force to overwrite its "
            "config (its id is kept)")
    broker_url = broker_url or default_broker_url()
    if not broker_url:
        raise ConfigurationError(
            "no broker URL: pass --broker-url URL, set FNRELAY_BROKER_URL, or run "
            "`fnrelay login --broker-url URL --token TOKEN`")
    return paths, broker_url


def _registered_id(paths: EndpointPaths, broker_url: str, multi_user: bool) -> str | None:
    """The endpoint's id, created at the broker now if it has none and a token is at hand;
    None if it cannot be yet (it is then created at the first start)."""
    from fnrelay.errors import FnRelayError
    from fnrelay_endpoint import registration

    if paths.identity.exists():
        return paths.endpoint_id()
    try:
        token = resolve_credentials(broker_url=broker_url).token
    except ConfigurationError:
        return None
    metadata = {"multi_user": True} if multi_user else {}
    try:
        return registration.create(paths, broker_url, token, paths.name, metadata)
    except FnRelayError:
        return None


def configure(name: str, broker_url: str | None = None, max_workers: int | None = None,
              force: bool = False) -> tuple[EndpointPaths, str | None]:
    """Create (or with `force` rewrite) an endpoint's directory; returns (paths, endpoint id),
    the id None when the broker could not be asked for one yet.

    A forced rewrite keeps the existing endpoint id.
    """
    paths, broker_url = _new_endpoint(name, broker_url, force)
    workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
    text = _TEMPLATE.format(name=name, broker_url=broker_url.rstrip("/"), max_workers=workers)
    EndpointConfig.from_dict(yaml.safe_load(text), "config.yaml")  # reject bad flags now
    private_mkdir(paths.dir)
    os.chmod(paths.dir, 0o700)  # config.yaml may hold the token
    write_private(paths.config, text)
    return paths, _registered_id(paths, broker_url, multi_user=False)


# --- multi-user endpoints (managers) -----------------------------------------------------------
def is_multi_user(path: Path) -> bool:
    """True if the config file at `path` is a multi-user manager's (``multi_user: true``)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("multi_user") is True


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

    def resolved_token(self) -> str:
        return _resolved_token(self.token, self.broker_url)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> ManagerConfig:
        if not isinstance(data, dict) or data.get("multi_user") is not True:
            raise ConfigurationError(f"{source}: not a multi-user config (multi_user: true)")
        known = {"multi_user", "broker_url", "token", "display_name", "idle_timeout",
                 "max_children", "identity_mapping", "min_uid", "child_python",
                 "heartbeat_period"}
        for key in data:
            if key not in known:
                raise ConfigurationError(
                    f"{source}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        base = EndpointConfig.from_dict(
            {k: data[k] for k in ("broker_url", "token", "display_name", "heartbeat_period")
             if k in data}, source)
        idle = data.get("idle_timeout", 600)
        if isinstance(idle, bool) or not isinstance(idle, (int, float)) or idle <= 0:
            raise ConfigurationError(f"{source}: 'idle_timeout' must be a positive number of "
                                     f"seconds, got {idle!r}")
        min_uid = data.get("min_uid", 1000)
        if isinstance(min_uid, bool) or not isinstance(min_uid, int) or min_uid < 1:
            raise ConfigurationError(f"{source}: 'min_uid' must be an integer >= 1 (root is "
                                     f"always refused), got {min_uid!r}")
        for key in ("identity_mapping", "child_python"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigurationError(f"{source}: {key!r} must be a path")
        return cls(
            broker_url=base.broker_url, token=base.token, display_name=base.display_name,
            idle_timeout=float(idle),
            max_children=_positive_int(data.get("max_children", 32), "max_children", source),
            identity_mapping=data.get("identity_mapping") or "identity_mapping.yaml",
            min_uid=min_uid, child_python=data.get("child_python"),
            heartbeat_period=base.heartbeat_period,
        )

    @classmethod
    def load(cls, path: Path) -> ManagerConfig:
        return cls.from_dict(_read_config(path), str(path))


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
    manager = isinstance(data, dict) and data.get("multi_user") is True
    return (ManagerConfig if manager else EndpointConfig).from_dict(data, str(path))


_MANAGER_TEMPLATE = """\
# fnrelay MULTI-USER endpoint {name!r}: a manager that starts one child endpoint per
# (broker user, user_endpoint_config), from user_config_template.yaml.j2, as the local account
# that identity_mapping.yaml maps the user to. Edit, then `fnrelay-endpoint start {name}`.
# Check the template with `fnrelay-endpoint render-user-config {name} --user-config JSON`.
multi_user: true

# The broker's REST address (the manager and its children only make outbound connections).
broker_url: {broker_url}

# The site administrator's token. Default: FNRELAY_TOKEN, else `fnrelay login`'s credentials.
# Children never get it: they receive only AMQP credentials, on stdin.
# token: ...

# Name shown by the broker (default: the endpoint's local name).
display_name: {name}

# Seconds a child may sit without tasks before it stops (it restarts on the next task).
idle_timeout: 600

# Children running at once; further ones wait until one stops.
max_children: 32

# Broker users -> local accounts (relative to this directory). Unmapped users are refused.
identity_mapping: identity_mapping.yaml

# Accounts below this uid (system accounts) are refused; root (uid 0) always is.
min_uid: 1000

# Python interpreter of the children: it must be readable and runnable by the mapped
# accounts, with fnrelay installed (a venv outside any private home directory).
# Default: the manager's own interpreter.
# child_python: /opt/fnrelay/venv/bin/python

# Seconds between heartbeats; default: what the broker says at registration.
# heartbeat_period: 10
"""


def configure_multi_user(name: str, broker_url: str | None = None,
                         force: bool = False) -> tuple[EndpointPaths, str | None]:
    """Create a manager's directory: config.yaml, the user config template and schema, and
    the identity mapping (kept if they exist, even with `force`: an administrator's edits
    survive). Returns (paths, endpoint id)."""
    from fnrelay_endpoint.multiuser import usertemplate

    paths, broker_url = _new_endpoint(name, broker_url, force)
    text = _MANAGER_TEMPLATE.format(name=name, broker_url=broker_url.rstrip("/"))
    ManagerConfig.from_dict(yaml.safe_load(text), "config.yaml")
    private_mkdir(paths.dir)
    os.chmod(paths.dir, 0o700)  # config.yaml may hold the token
    write_private(paths.config, text)
    for file in (usertemplate.TEMPLATE_FILE, usertemplate.SCHEMA_FILE,
                 usertemplate.IDENTITY_FILE):
        target = paths.dir / file
        if not target.exists():  # an administrator's edits survive --force
            target.write_text(usertemplate.packaged(file))
    return paths, _registered_id(paths, broker_url, multi_user=True)
