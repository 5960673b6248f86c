"""A child endpoint's config from the site's template and the user's user_endpoint_config.

The user's config is validated against the site's JSON Schema (2020-12) first; a violation
names the field. Rendering happens in a sandboxed Jinja2 environment with StrictUndefined, and
templates emit user values with `tojson` (YAML positions) and `shquote` (shell). The rendered
text must parse as a YAML mapping of known keys: a value that escaped its quoting and added
keys or changed structure is refused here too.
"""

from __future__ import annotations

import json
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


class UserConfigError(FnRelayError):
    """The user's config, or what the template made of it, is refused (message says why)."""


def packaged(name: str) -> str:
    """The default file `name` shipped in this package's templates/ folder."""
    return (files("fnrelay_endpoint.multiuser") / "templates" / name).read_text()


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
    if RESERVED in config:
        raise UserConfigError(f"user_endpoint_config: the key {RESERVED!r} is reserved")
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise UserConfigError(f"{_where(e)}: {e.message} (refused by this endpoint's "
                              "user_config_schema.json)")


def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["shquote"] = shquote
    return env


def render_text(template: str, config: dict[str, Any], context: dict[str, Any]) -> str:
    """The template rendered with the user's keys and `fnrelay` (the manager's context)."""
    try:
        return environment().from_string(template).render({**config, RESERVED: context})
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
    init = data.pop("worker_init", None)
    if init is not None and not isinstance(init, str):
        raise UserConfigError("the rendered child config's 'worker_init' must be a string")
    data.setdefault("broker_url", broker_url)
    try:
        config = EndpointConfig.from_dict(data, "rendered child config")
    except FnRelayError as e:
        raise UserConfigError(str(e)) from e
    return config, {k: str(v) for k, v in env.items()}, init


def render(template: str, schema: dict[str, Any], config: Any, context: dict[str, Any],
           broker_url: str) -> tuple[str, EndpointConfig, dict[str, str], str | None]:
    """Validate, render and parse: (text, endpoint config, environment, worker_init)."""
    validate(config, schema)
    text = render_text(template, config, context)
    return (text, *parse(text, broker_url))
