"""What the local stack needs beyond the SDK: `pip install fnrelay` brings the broker's and the
endpoint's code but not their dependencies (the `broker` and `endpoint` extras), and without
them the stack's broker died at start with a ModuleNotFoundError traceback."""

from __future__ import annotations

import importlib.util

from fnrelay.devstack.processes import LocalStackError

#: Modules the stack's broker and endpoint import, by the extra (pyproject.toml) that brings them.
NEEDED = {"broker": ("fastapi", "uvicorn", "sqlalchemy", "alembic"),
          "endpoint": ("jinja2", "jsonschema")}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extras() -> None:
    """A one-line LocalStackError naming what to install, before anything is started."""
    missing = {extra: [m for m in modules if not _importable(m)]
               for extra, modules in NEEDED.items()}
    extras = [extra for extra, modules in missing.items() if modules]
    if extras:
        names = ", ".join(m for modules in missing.values() for m in modules)
        raise LocalStackError(
            f"the local stack runs a broker and an endpoint, which need the "
            f"{' and '.join(extras)} extra{'s' if len(extras) > 1 else ''} of fnrelay "
            f"(missing: {names}): pip install 'fnrelay[all]'")
