"""fnrelay: run Python functions and shell/MPI commands on remote endpoints.

    from fnrelay import Executor
    with Executor(endpoint_id) as ex:
        print(ex.submit(pow, 2, 10).result())

The public names are imported lazily: the broker and endpoint workers import
``fnrelay.wire`` and ``fnrelay.functions`` without paying for the HTTP and AMQP clients.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fnrelay import errors

if TYPE_CHECKING:
    from fnrelay.client import Batch, Client
    from fnrelay.config import endpoint_id_from_env
    from fnrelay.executor import Executor, FnRelayFuture
    from fnrelay.functions import MPIFunction, ShellFunction, ShellResult

try:
    __version__ = version("fnrelay")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

_LAZY = {
    "Batch": "fnrelay.client",
    "Client": "fnrelay.client",
    "Executor": "fnrelay.executor",
    "FnRelayFuture": "fnrelay.executor",
    "MPIFunction": "fnrelay.functions",
    "ShellFunction": "fnrelay.functions",
    "ShellResult": "fnrelay.functions",
    "endpoint_id_from_env": "fnrelay.config",
}

__all__ = [
    "Batch",
    "Client",
    "Executor",
    "FnRelayFuture",
    "MPIFunction",
    "ShellFunction",
    "ShellResult",
    "__version__",
    "endpoint_id_from_env",
    "errors",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fnrelay' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
