"""A new endpoint's directory: `configure` and `configure_multi_user` (the CLI's
``fnrelay-endpoint configure [--multi-user]``).

The config.yaml they write comes from the scaffold files beside this module, endpoint.yaml and
manager.yaml: commented YAML whose ``{name}``, ``{broker_url}`` and ``{max_workers}`` are
str.format fields. What is written is parsed back through the model before it is saved, so a
bad flag is refused at once. A manager also gets the multi-user template, schema and identity
mapping from `fnrelay_endpoint.multiuser`; this module imports that package, never the other
way round.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files

import yaml

from fnrelay.config import (
    ENV_BROKER_URL,
    credentials_path,
    private_mkdir,
    resolve_credentials,
    write_private,
)
from fnrelay.errors import ConfigurationError, FnRelayError
from fnrelay_endpoint import registration
from fnrelay_endpoint.config.model import EndpointConfig, EndpointPaths, ManagerConfig
from fnrelay_endpoint.multiuser import usertemplate


def scaffold(name: str) -> str:
    """The scaffold file `name` (endpoint.yaml, manager.yaml) shipped beside this module."""
    return (files("fnrelay_endpoint.config") / name).read_text()


def default_broker_url() -> str | None:
    """FNRELAY_BROKER_URL, else the URL saved by `fnrelay login`."""
    url = os.environ.get(ENV_BROKER_URL)
    if url:
        return url
    try:
        return json.loads(credentials_path().read_text()).get("broker_url")
    except (OSError, ValueError, AttributeError):
        return None


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
    text = scaffold("endpoint.yaml").format(name=name, broker_url=broker_url.rstrip("/"),
                                            max_workers=workers)
    EndpointConfig.from_dict(yaml.safe_load(text), "config.yaml")  # reject bad flags now
    private_mkdir(paths.dir)
    os.chmod(paths.dir, 0o700)  # config.yaml may hold the token
    write_private(paths.config, text)
    return paths, _registered_id(paths, broker_url, multi_user=False)




def configure_multi_user(name: str, broker_url: str | None = None,
                         force: bool = False) -> tuple[EndpointPaths, str | None]:
    """Create a manager's directory: config.yaml, the user config template and schema, and
    the identity mapping (kept if they exist, even with `force`: an administrator's edits
    survive). Returns (paths, endpoint id)."""
    paths, broker_url = _new_endpoint(name, broker_url, force)
    text = scaffold("manager.yaml").format(name=name, broker_url=broker_url.rstrip("/"))
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
