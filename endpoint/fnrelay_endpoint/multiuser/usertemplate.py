"""A child endpoint's config from the site's template and the user's user_endpoint_config.

The user's config is validated against the site's JSON Schema (2020-12) first; a violation
names the field. Rendering happens in a sandboxed Jinja2 environment with StrictUndefined, and
templates emit user values with `tojson` (YAML positions) and `shquote` (shell). The rendered
text must parse as a YAML mapping of known keys: a value that escaped its quoting and added
keys or changed structure is refused here too.
"""

from __future__ import annotations

import json
import pwd
import shlex
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from fnrelay.errors import FnRelayError
from fnrelay_endpoint.config.model import EndpointConfig, yaml_problem
from fnrelay_endpoint.engines.batch.templating import TemplateRenderError, shquote

TEMPLATE_FILE = "user_config_template.yaml.j2"
SCHEMA_FILE = "user_config_schema.json"
IDENTITY_FILE = "identity_mapping.yaml"
#: Keys a rendered child config may hold besides those of a normal endpoint config.
CHILD_KEYS = frozenset({"environment", "worker_init"})
#: Template variable the manager fills in; a user config may not use this name.
RESERVED = "fnrelay"
#: Globus Compute's reserved template variables (`_GC.*`; the bare names are its deprecated
#: spellings), refused in a user config as GC refuses them.
GC_RESERVED = ("_GC", "parent_config", "user_runtime", "mapped_identity")


class UserConfigError(FnRelayError):
    """The user's config, or what the template made of it, is refused (message says why)."""


def packaged(name: str) -> str:
    """The default file `name` shipped in this package's templates/ folder."""
    return (files("fnrelay_endpoint.multiuser") / "templates" / name).read_text()


#: Globus Compute's site environment file: variables every child gets (the template's
#: `environment:` wins); HOME, USER and PWD stay the account's, as GC keeps them.
USER_ENV_FILE = "user_environment.yaml"
_ACCOUNT_VARIABLES = frozenset({"HOME", "USER", "PWD"})


def load_user_environment(path: Path) -> dict[str, str]:
    """The variables of `path` (none if it does not exist), checked to be a flat mapping."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as e:
        raise FnRelayError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in data.items()):
        raise FnRelayError(f"{path}: expected a mapping of variable names to strings")
    refused = sorted(_ACCOUNT_VARIABLES & set(data))
    if refused:
        raise FnRelayError(f"{path}: {refused[0]} cannot be set here (it is the account's)")
    return {k: str(v) for k, v in data.items()}


def load_schema(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise FnRelayError(f"cannot read the user config schema {path}: {e}") from e
    return load_schema_text(text, str(path))


def load_schema_text(text: str, source: str = SCHEMA_FILE) -> dict[str, Any]:
    """A JSON Schema (2020-12) from its text, checked to be one."""
    try:
        schema = json.loads(text)
        jsonschema.Draft202012Validator.check_schema(schema)
    except (ValueError, jsonschema.SchemaError) as e:
        raise FnRelayError(f"{source}: not a valid JSON Schema: {e}") from e
    if not isinstance(schema, dict):
        raise FnRelayError(f"{source}: the schema must be a JSON object")
    return schema


def _where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"user_endpoint_config{path}"


def validate(config: Any, schema: dict[str, Any]) -> None:
    """Refuse a config that violates `schema`, naming the first offending field."""
    if not isinstance(config, dict):
        raise UserConfigError("user_endpoint_config must be a JSON object")
    for name in (RESERVED, *GC_RESERVED):
        if name in config:
            raise UserConfigError(f"user_endpoint_config: the key {name!r} is reserved")
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise UserConfigError(f"{_where(e)}: {e.message} (refused by this endpoint's "
                              "user_config_schema.json)")


def environment(dialect: str = "fnrelay") -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                               trim_blocks=dialect == "fnrelay",
                               lstrip_blocks=dialect == "fnrelay", keep_trailing_newline=True)
    env.filters["shquote"] = shquote
    env.filters["shell_escape"] = _gc_shell_escape if dialect == "globus-compute" else shquote
    return env


def gc_quoted(value: Any) -> Any:
    """User values as Globus Compute hands them to its templates: strings already JSON-quoted
    (a YAML-safe scalar wherever `{{ x }}` lands), None as `null`."""
    if isinstance(value, dict):
        return {k: gc_quoted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [gc_quoted(v) for v in value]
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return value
    raise UserConfigError(f"user_endpoint_config: a {type(value).__name__} is not a JSON value")


def _gc_shell_escape(value: Any) -> Any:
    """GC's `shell_escape`: shell-quote the JSON-quoted string, keep it JSON-quoted."""
    if not isinstance(value, str):
        return value
    try:
        loaded = json.loads(value)
    except ValueError:
        return value
    return json.dumps(shlex.quote(loaded)) if isinstance(loaded, str) else value


def gc_variables(parent_config: dict[str, Any], account: str, user_id: str,
                 user_runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """`_GC` as Globus Compute's templates read it: parent_config (the manager's settings),
    mapped_identity (the local account; `globus.id` is the broker user's id) and
    user_runtime (what the submitting SDK reported; empty when it reported nothing)."""
    pw = pwd.getpwnam(account)
    import os

    return {
        "parent_config": parent_config,
        "mapped_identity": {
            "local": {"uname": pw.pw_name, "uid": pw.pw_uid, "gid": pw.pw_gid,
                      "gecos": pw.pw_gecos, "shell": pw.pw_shell, "dir": pw.pw_dir,
                      "groups": os.getgrouplist(pw.pw_name, pw.pw_gid)},
            "globus": {"id": user_id}},
        "user_runtime": user_runtime or {},
    }


def render_text(template: str, config: dict[str, Any], context: dict[str, Any],
                gc: dict[str, Any] | None = None, dialect: str = "fnrelay") -> str:
    """The template rendered with the user's keys, `fnrelay` (the manager's context) and
    `_GC` (Globus Compute's); in GC's dialect user values arrive JSON-quoted, as GC does."""
    gc = gc or {"parent_config": {}, "mapped_identity": {}, "user_runtime": {}}
    if dialect == "globus-compute":
        config = gc_quoted(config)
        gc = {**gc, "user_runtime": gc_quoted(gc.get("user_runtime") or {})}
    try:
        return environment(dialect).from_string(template).render(
            {**config, RESERVED: context, "_GC": gc})
    except (TemplateError, TemplateRenderError) as e:
        raise UserConfigError(f"the endpoint's user config template failed: {e}") from e


def parse(text: str, broker_url: str) -> tuple[EndpointConfig, dict[str, str], str | None]:
    """(endpoint config, environment, worker_init) from rendered text, checked strictly."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserConfigError(
            f"the rendered child config is not valid YAML: {yaml_problem(e)}") from e
    if not isinstance(data, dict):
        raise UserConfigError("the rendered child config is not a mapping")
    env = data.pop("environment", None) or {}
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in env.items()):
        raise UserConfigError("the rendered child config's 'environment' must map names to "
                              "strings")
    setup = data.pop("endpoint_setup", None)  # GC's name for commands run before it starts
    init = data.pop("worker_init", None) or setup
    if init is not None and not isinstance(init, str):
        raise UserConfigError("the rendered child config's 'worker_init' must be a string")
    data.setdefault("broker_url", broker_url)
    try:
        config = EndpointConfig.from_dict(data, "rendered child config")
    except FnRelayError as e:
        raise UserConfigError(str(e)) from e
    return config, {k: str(v) for k, v in env.items()}, init


def render(template: str, schema: dict[str, Any], config: Any, context: dict[str, Any],
           broker_url: str, gc: dict[str, Any] | None = None, dialect: str = "fnrelay",
           ) -> tuple[str, EndpointConfig, dict[str, str], str | None]:
    """Validate, render and parse: (text, endpoint config, environment, worker_init)."""
    validate(config, schema)
    text = render_text(template, config, context, gc, dialect)
    return (text, *parse(text, broker_url))
