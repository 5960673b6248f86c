"""`fnrelay-endpoint configure NAME --from-globus-compute DIR`: a Globus Compute endpoint
directory, of either layout GC has shipped, converted once into a fnrelay endpoint.

The older layout is one config.yaml with an `engine:` section: it becomes a normal endpoint
whose config.yaml holds fnrelay's keys (GC's engine mapped by `globus.translate_engine`). The
4.x layout is a manager's config.yaml (`display_name: null` and what `configure` added) plus
user_config_template.yaml.j2, user_config_schema.json and the identity mapping JSON: it becomes
a multi-user endpoint that renders GC's template, as shipped, in GC's dialect. The source
directory is only read. Every difference is reported, one line each.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from fnrelay.config import private_mkdir, write_private
from fnrelay.errors import ConfigurationError
from fnrelay_endpoint.config import globus, scaffold
from fnrelay_endpoint.config.model import (
    GC_TEMPLATE_FILE,
    EndpointConfig,
    EndpointPaths,
    ManagerConfig,
    yaml_problem,
)
from fnrelay_endpoint.multiuser import usertemplate

SCHEMA_FILE = "user_config_schema.json"
USER_ENV_FILE = usertemplate.USER_ENV_FILE
HEADER = ("# Converted from the Globus Compute endpoint directory {src} by\n"
          "# `fnrelay-endpoint configure {name} --from-globus-compute`.\n")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigurationError(f"cannot read {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigurationError(f"{path}: invalid YAML: {yaml_problem(e)}") from e
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping of settings")
    return data


def _template(src: Path) -> Path | None:
    """GC's user config template in `src` (GC falls back from .yaml.j2 to .yaml)."""
    for name in (GC_TEMPLATE_FILE, GC_TEMPLATE_FILE.removesuffix(".j2")):
        if (src / name).is_file():
            return src / name
    return None


def convert(name: str, src: Path, broker_url: str | None, force: bool = False,
            display_name: str | None = None) -> tuple[EndpointPaths, str | None, list[str]]:
    """Create endpoint `name` from GC directory `src`; returns (paths, endpoint id, changes)."""
    src = src.expanduser().resolve()
    if not (src / "config.yaml").is_file():
        raise ConfigurationError(f"{src} is not a Globus Compute endpoint directory (no "
                                 "config.yaml)")
    data = _read_yaml(src / "config.yaml")
    if display_name is not None:
        data["display_name"] = display_name
    paths, url = scaffold._new_endpoint(name, broker_url, force)
    changes: list[str] = []
    if "engine" in data or _template(src) is None:
        text = _single(data, url, changes)
        multi_user = False
    else:
        text = _manager(data, url, src, changes)
        multi_user = True
    private_mkdir(paths.dir)
    os.chmod(paths.dir, 0o700)  # config.yaml may hold the token
    write_private(paths.config, HEADER.format(src=src, name=name) + text)
    if multi_user:
        _copy_files(src, paths.dir, data, changes)
    return paths, scaffold._registered_id(paths, url, multi_user), changes


def _single(data: dict[str, Any], url: str, changes: list[str]) -> str:
    """The older layout: one endpoint, GC's engine mapped to fnrelay's."""
    out = {"broker_url": url, **globus.translate_endpoint(data, "config.yaml", changes.append)}
    engine = data.get("engine")
    if isinstance(engine, dict) and globus.is_globus_engine(engine):
        changes.append(f"config.yaml: engine {engine['type']} -> fnrelay's "
                       f"{out['engine']['type']} engine")
    changes.append(f"config.yaml: broker_url {url} added")
    EndpointConfig.from_dict(out, "config.yaml")  # refuse what will not start, now
    return yaml.safe_dump(out, sort_keys=False)


def _manager(data: dict[str, Any], url: str, src: Path, changes: list[str],
             dialect: str = "globus-compute") -> str:
    """The 4.x layout: a manager whose children render GC's template in GC's dialect."""
    out = globus.translate_manager(data, "config.yaml", changes.append)
    idmap = data.get("identity_mapping_config_path")
    if idmap:
        out["identity_mapping"] = Path(idmap).name
        changes.append(f"config.yaml: identity_mapping_config_path -> identity_mapping "
                       f"{Path(idmap).name} (copied)")
    out = {"multi_user": True, "broker_url": url, **out, "template_dialect": dialect}
    changes.append(f"config.yaml: multi_user: true, broker_url {url} and template_dialect: "
                   f"{dialect} added")
    ManagerConfig.from_dict(out, "config.yaml")
    return yaml.safe_dump(out, sort_keys=False)


def _copy_files(src: Path, dest: Path, data: dict[str, Any], changes: list[str]) -> None:
    """GC's template, schema and identity mapping, copied as they are."""
    template = _template(src)
    assert template is not None
    shutil.copyfile(template, dest / GC_TEMPLATE_FILE)
    if (src / SCHEMA_FILE).is_file():
        shutil.copyfile(src / SCHEMA_FILE, dest / SCHEMA_FILE)
    else:
        (dest / SCHEMA_FILE).write_text('{"type": "object"}\n')
        changes.append(f"{SCHEMA_FILE}: none in {src}; one accepting any object written")
    idmap = data.get("identity_mapping_config_path")
    if idmap:
        path = Path(idmap) if Path(idmap).is_absolute() else src / idmap
        if not path.is_file():  # GC wrote its own directory's path; the file is beside it
            path = src / Path(idmap).name
        shutil.copyfile(path, dest / path.name)
        os.chmod(dest / path.name, 0o600)
    if (src / USER_ENV_FILE).is_file():
        shutil.copyfile(src / USER_ENV_FILE, dest / USER_ENV_FILE)


def apply_overrides(paths: EndpointPaths, multi_user: bool, core: Path | None = None,
                    template: Path | None = None, schema: Path | None = None,
                    id_mapping: Path | None = None, display_name: str | None = None,
                    user_env: Path | None = None) -> list[str]:
    """`configure`'s file overrides, as GC's: each given file replaces the default one just
    written (a core config in GC's or fnrelay's keys); returns the changes."""
    if not multi_user and (template or schema or id_mapping or user_env):
        raise ConfigurationError("--template-config, --schema-config, --user-env-config and "
                                 "--id-mapping-config require a multi-user endpoint (hint: "
                                 "--multi-user)")
    if user_env is not None:
        usertemplate.load_user_environment(user_env)  # refuse a bad file now
    changes: list[str] = []
    current = _read_yaml(paths.config)
    # Files given for a manager are GC's: its template renders in GC's dialect.
    dialect = "globus-compute" if template is not None else current.get("template_dialect",
                                                                         "fnrelay")
    if core is not None:
        data = _read_yaml(core)
        data.pop("broker_url", None)
        url = current["broker_url"]
        text = _manager({**data, **_keep(current, multi_user)}, url, core.parent, changes,
                        data.get("template_dialect", dialect)) \
            if multi_user else _single({**data, "broker_url": url}, url, changes)
        write_private(paths.config, text)
        changes.append(f"config.yaml: from {core}")
    elif multi_user and dialect != current.get("template_dialect", "fnrelay"):
        write_private(paths.config, yaml.safe_dump({**current, "template_dialect": dialect},
                                                   sort_keys=False))
        changes.append(f"config.yaml: template_dialect: {dialect}")
    if display_name is not None:
        data = _read_yaml(paths.config)
        data["display_name"] = display_name
        (ManagerConfig if multi_user else EndpointConfig).from_dict(data, "config.yaml")
        write_private(paths.config, yaml.safe_dump(data, sort_keys=False))
    for given, target in ((template, GC_TEMPLATE_FILE), (schema, SCHEMA_FILE),
                          (user_env, USER_ENV_FILE)):
        if given is not None:
            shutil.copyfile(given, paths.dir / target)
            changes.append(f"{target}: from {given}")
    if id_mapping is not None:
        _use_id_mapping(paths, id_mapping, changes)
    return changes


def _keep(current: dict[str, Any], multi_user: bool) -> dict[str, Any]:
    """What a manager's replaced config.yaml keeps: its token (no GC key names it)."""
    return {"token": current["token"]} if multi_user and current.get("token") else {}


def _use_id_mapping(paths: EndpointPaths, given: Path, changes: list[str]) -> None:
    shutil.copyfile(given, paths.dir / given.name)
    os.chmod(paths.dir / given.name, 0o600)
    data = _read_yaml(paths.config)
    data["identity_mapping"] = given.name
    write_private(paths.config, yaml.safe_dump(data, sort_keys=False))
    changes.append(f"identity_mapping: {given.name} (from {given})")
