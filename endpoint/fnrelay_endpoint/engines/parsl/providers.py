"""Any Parsl provider and launcher by type, as Globus Compute's endpoint config names them.

`provider: {type: SlurmProvider, partition: debug, launcher: {type: SrunLauncher}}` is
resolved from Parsl's own classes by name (only those Parsl exports from `parsl.providers` and
`parsl.launchers`: a config never imports arbitrary code), and every key is checked against
the class's signature before anything is built, so a typo is a ConfigurationError naming the
key and the keys the class knows, never a stack trace from deep inside Parsl.

`provider_from_spec` and `launcher_from_spec` are public: the Globus Compute config mapping
(issue 19) builds its providers with them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from fnrelay.errors import ConfigurationError

#: Where each kind of class is looked up, and the base class it must derive from.
_KINDS = {"provider": ("parsl.providers", "parsl.providers.base", "ExecutionProvider"),
          "launcher": ("parsl.launchers", "parsl.launchers.base", "Launcher")}
#: Provider classes whose blocks run on a scheduler fnrelay knows by its short name.
FAMILIES = {"LocalProvider": "local", "SlurmProvider": "slurm", "PBSProProvider": "pbspro",
            "TorqueProvider": "pbspro", "GridEngineProvider": "sge", "LSFProvider": "lsf",
            "CondorProvider": "htcondor"}


def _refuse(source: str, key: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"{source}: '{key}' {why}")


def known_types(kind: str) -> list[str]:
    """Names a `type:` of this kind ("provider" | "launcher") may take."""
    import importlib

    module_name, base_module, base_name = _KINDS[kind]
    module = importlib.import_module(module_name)
    base = getattr(importlib.import_module(base_module), base_name)
    names = getattr(module, "__all__", dir(module))
    return sorted({n for n in names if isinstance(getattr(module, n, None), type)
                   and issubclass(getattr(module, n), base)})


def resolve_type(kind: str, name: Any, source: str, key: str) -> type:
    """Parsl's class named `name` (`SlurmProvider` or `parsl.providers.SlurmProvider`)."""
    import importlib

    module_name = _KINDS[kind][0]
    known = known_types(kind)
    short = name.removeprefix(module_name + ".") if isinstance(name, str) else name
    if short not in known:
        raise _refuse(source, f"{key}.type", f"must name a Parsl {kind} class, not {name!r} "
                      f"(known: {', '.join(known)})")
    cls: type = getattr(importlib.import_module(module_name), short)
    return cls


def check_keywords(cls: type, options: Mapping[str, Any], source: str, key: str) -> None:
    """Refuse keys `cls.__init__` does not take, naming the ones it does."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              inspect.Parameter.KEYWORD_ONLY)}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise _refuse(source, f"{key}.{unknown[0]}", f"is not a keyword of {cls.__name__} "
                      f"(it takes: {', '.join(sorted(accepted))})")


def _split(spec: Any, source: str, key: str) -> tuple[Any, dict[str, Any]]:
    """(type name, the other keys) of `{type: Name, ...}` or of a bare `Name`.

    A key set to null is left out, so the class's default applies: Globus Compute does the
    same, and its config templates render unset options as null.
    """
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise _refuse(source, key, f"must be a mapping with a 'type' (a Parsl class name), "
                      f"not {spec!r}")
    return spec["type"], {k: v for k, v in spec.items() if k != "type" and v is not None}


def _construct(cls: type, options: dict[str, Any], source: str, key: str) -> Any:
    """cls(**options); whatever Parsl raises about a value becomes a ConfigurationError."""
    try:
        return cls(**options)
    except Exception as e:  # noqa: BLE001 - typeguard, ValueError, ...: a bad value
        raise _refuse(source, key, f"could not build {cls.__name__}: "
                      f"{type(e).__name__}: {e}") from None


def launcher_from_spec(spec: Any, source: str = "config", key: str = "engine.provider.launcher"
                       ) -> Any:
    """A Parsl launcher from `{type: SrunLauncher, ...}` or `SrunLauncher`."""
    name, options = _split(spec, source, key)
    cls = resolve_type("launcher", name, source, key)
    check_keywords(cls, options, source, key)
    return _construct(cls, options, source, key)


def provider_class(spec: Any, source: str = "config", key: str = "engine.provider") -> type:
    """The Parsl provider class `spec` names, its keys checked (nothing is built)."""
    name, options = _split(spec, source, key)
    cls = resolve_type("provider", name, source, key)
    check_keywords(cls, options, source, key)
    if "launcher" in options:
        launcher_name, launcher_options = _split(options["launcher"], source, f"{key}.launcher")
        launcher_cls = resolve_type("launcher", launcher_name, source, f"{key}.launcher")
        check_keywords(launcher_cls, launcher_options, source, f"{key}.launcher")
    return cls


def provider_from_spec(spec: Any, source: str = "config", key: str = "engine.provider",
                       **overrides: Any) -> Any:
    """A Parsl provider from `{type: SlurmProvider, ..., launcher: {type: SrunLauncher}}`.

    `overrides` (e.g. another launcher object and block shape for MPI pilots) replace the
    spec's own keys; they are checked against the class like the spec's.
    """
    cls = provider_class(spec, source, key)
    _, options = _split(spec, source, key)
    if "launcher" in options:
        options["launcher"] = launcher_from_spec(options["launcher"], source, f"{key}.launcher")
    options.update(overrides)
    check_keywords(cls, overrides, source, key)
    return _construct(cls, options, source, key)


def family(spec: Any) -> str:
    """fnrelay's short name of the scheduler `spec`'s provider uses ("other" if none)."""
    name, _ = _split(spec, "config", "engine.provider")
    short = name.rsplit(".", 1)[-1] if isinstance(name, str) else ""
    return FAMILIES.get(short, "other")
