"""Header-tagged serialization of functions, arguments and results.

A serialized value is a text string "<tag>\\n<data>". The tag names the strategy, so a reader
never guesses and new strategies can be added without breaking old messages:

  ``01`` dill, function by value as bytecode (code + referenced globals): the fallback for a
         function of ``__main__``, a notebook or a module the endpoint cannot import whose
         source is not available; only the same Python minor version reads it
  ``02`` dill, data (pickled objects; also callables by reference and callable objects)
  ``03`` JSON (plain data: fast and readable in the database)
  ``04`` source text of a function (``name\\nsource``), for functions dill cannot pickle
  ``05`` a reference to a result kept as a blob by the broker (see :mod:`fnrelay.blobs`);
         the SDK fetches the blob, which holds one of the strategies above
  ``06`` a function as source text with the values it captures (:mod:`fnrelay.by_source`),
         which every supported Python version reads: the default for functions by value

Functions from installed packages (site-packages, the standard library) travel by reference,
everything else by value, since the endpoint is usually another machine: as source (06), or
as bytecode (01) when no source is available, which only the same minor version runs.
Every pickle is written with protocol `PICKLE_PROTOCOL`, which every supported version reads.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import io
import json
import sys
import sysconfig
import textwrap
import types
from collections.abc import Iterator
from typing import Any

import dill

from fnrelay import by_source
from fnrelay.by_source import PICKLE_PROTOCOL
from fnrelay.errors import DeserializationError, SerializationError

TAG_DILL_CODE = "01"
TAG_DILL_DATA = "02"
TAG_JSON = "03"
TAG_SOURCE = "04"
TAG_BLOB = "05"
TAG_SOURCE_VALUES = "06"

_PATH_KEYS = ("stdlib", "platstdlib", "purelib", "platlib")
_INSTALLED_PREFIXES = tuple(p for p in {sysconfig.get_paths().get(k) for k in _PATH_KEYS} if p)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_installed_module(module_name: str | None) -> bool:
    """True for modules an endpoint with the same packages can import by name."""
    if not module_name or module_name == "__main__":
        return False
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("fnrelay", "fnrelay_endpoint", "fnrelay_wrappers"):
        return True
    mod = sys.modules.get(module_name)
    path = getattr(mod, "__file__", None)
    return isinstance(path, str) and path.startswith(_INSTALLED_PREFIXES)


def _unimportable(obj: Any) -> bool:
    return isinstance(obj, (types.FunctionType, type)) and not _is_installed_module(
        getattr(obj, "__module__", None)
    )


@contextlib.contextmanager
def _as_main(fn: types.FunctionType) -> Iterator[None]:
    """Make dill pickle `fn`, and the functions and classes it uses from modules the endpoint
    cannot import, by value: dill does that for objects of ``__main__``, so their
    ``__module__`` says so while pickling, and is restored afterwards."""
    objects = [fn] + [
        v for v in dill.detect.globalvars(fn, recurse=True).values() if _unimportable(v)
    ]
    saved = [(obj, obj.__module__) for obj in objects]
    try:
        for obj, _ in saved:
            obj.__module__ = "__main__"
        yield
    finally:
        for obj, module in saved:
            obj.__module__ = module


def _portable_dumps(obj: Any, strict: bool) -> bytes:
    buffer = io.BytesIO()
    by_source.Pickler(buffer, strict=strict).dump(obj)
    return buffer.getvalue()


def _travels_by_value(fn: Any) -> bool:
    """A function, or a method of an instance, of code the endpoint cannot import."""
    if isinstance(fn, types.MethodType):
        return _travels_by_value(fn.__func__)
    return isinstance(fn, types.FunctionType) and _unimportable(fn)


def serialize_function(fn: Any) -> str:
    """Serialize a callable for execution elsewhere: a function of code the endpoint cannot
    import as source (06) when its source (and that of what it uses) is available, else as
    bytecode (01, which only the same minor version reads); an installed function or a
    callable object (ShellFunction, functools.partial) as pickled data (02)."""
    if not callable(fn):
        raise SerializationError(f"{fn!r} is not callable")
    if _travels_by_value(fn):
        try:
            return f"{TAG_SOURCE_VALUES}\n{_b64(_portable_dumps(fn, strict=True))}"
        except Exception:  # noqa: BLE001,S110 - no source, or a value dill reports better below
            pass
    by_value = _unimportable(fn) and isinstance(fn, types.FunctionType)
    try:
        if not _travels_by_value(fn):  # a reference, or a callable object: data, no bytecode
            return f"{TAG_DILL_DATA}\n{_b64(_portable_dumps(fn, strict=False))}"
        with _as_main(fn) if by_value else contextlib.nullcontext():
            data = dill.dumps(fn, protocol=PICKLE_PROTOCOL, recurse=True)
        return f"{TAG_DILL_CODE}\n{_b64(data)}"
    except Exception as dill_error:  # noqa: BLE001 - fall back to source, then report both
        name = getattr(fn, "__qualname__", fn)
        culprit, uses_names = _variable_culprit(fn)
        if culprit:
            raise SerializationError(f"cannot serialize function {name!r}: {culprit}") \
                from dill_error
        try:
            # The source alone runs remotely only if it needs no global or enclosing variable.
            if uses_names:
                raise TypeError("uses variables the source text does not carry")
            source = textwrap.dedent(inspect.getsource(fn))
            return f"{TAG_SOURCE}\n{fn.__name__}\n{source}"
        except (OSError, TypeError):
            raise SerializationError(
                f"cannot serialize function {name!r}: {dill_error}"
            ) from dill_error


def _variable_culprit(fn: Any) -> tuple[str | None, bool]:
    """Which global or enclosing variable of `fn` dill cannot pickle, and why; and whether
    `fn` uses any such variable at all (the error of the whole function often names only an
    inner type, and falling back to source would lose the variable: a remote NameError)."""
    try:
        named = [("global", k, v) for k, v in dill.detect.globalvars(fn, recurse=True).items()]
        named += [("variable", k, v) for k, v in dill.detect.freevars(fn).items()]
    except Exception:  # noqa: BLE001 - not a plain function: nothing more to say
        return None, False
    for kind, key, value in named:
        try:
            dill.dumps(value, protocol=PICKLE_PROTOCOL, recurse=True)
        except Exception as e:  # noqa: BLE001 - as in serialize
            where = "global" if kind == "global" else "variable from the enclosing scope"
            return (f"{where} {key!r} of type {type(value).__qualname__} cannot be "
                    f"serialized: {e}"), True
    return None, bool(named)


def serialize(obj: Any) -> str:
    """Serialize a value (arguments, results): JSON when lossless, else dill."""
    if type(obj) in (str, int, bool, type(None)) or (
        type(obj) in (list, dict) and _json_safe(obj)
    ):
        return f"{TAG_JSON}\n{json.dumps(obj, separators=(',', ':'))}"
    try:
        return f"{TAG_DILL_DATA}\n{_b64(_portable_dumps(obj, strict=False))}"
    except Exception as e:  # noqa: BLE001 - dill raises many types; name the culprit
        raise SerializationError(
            f"cannot serialize object of type {type(obj).__qualname__}: {e}"
        ) from e


def _json_safe(obj: Any, depth: int = 0) -> bool:
    """True if JSON round-trips `obj` exactly (no tuples, floats' repr kept, str keys)."""
    if depth > 50:
        return False
    t = type(obj)
    if t in (str, int, bool, type(None)):
        return True
    if t is list:
        return all(_json_safe(v, depth + 1) for v in obj)
    if t is dict:
        return all(type(k) is str and _json_safe(v, depth + 1) for k, v in obj.items())
    return False


def serialize_args(args: tuple, kwargs: dict) -> str:
    """Serialize a call's arguments as one value (JSON when every argument allows it)."""
    positional, kwargs = list(args), dict(kwargs)
    if _json_safe(positional) and _json_safe(kwargs):
        return f"{TAG_JSON}\n{json.dumps([positional, kwargs], separators=(',', ':'))}"
    try:
        return serialize((tuple(args), kwargs))
    except SerializationError as e:
        raise SerializationError(_culprit(positional, kwargs) or str(e)) from e


def _culprit(args: list, kwargs: dict) -> str | None:
    """Which argument could not be serialized, and why (the error of the whole call names
    only the tuple holding them)."""
    named = [(f"argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for name, value in named:
        try:
            dill.dumps(value, protocol=PICKLE_PROTOCOL, recurse=True)
        except Exception as e:  # noqa: BLE001 - as in serialize
            return f"cannot serialize {name} of type {type(value).__qualname__}: {e}"
    return None


def deserialize(data: str) -> Any:
    """Inverse of serialize/serialize_function/serialize_args."""
    tag, _, body = data.partition("\n")
    try:
        if tag in (TAG_DILL_CODE, TAG_DILL_DATA, TAG_SOURCE_VALUES):
            return dill.loads(base64.b64decode(body))
        if tag == TAG_JSON:
            return json.loads(body)
        if tag == TAG_SOURCE:
            name, _, source = body.partition("\n")
            namespace: dict[str, Any] = {"__name__": "__main__"}
            exec(compile(source, f"<fnrelay function {name}>", "exec"), namespace)  # noqa: S102
            return namespace[name]
    except Exception as e:  # noqa: BLE001
        raise DeserializationError(f"cannot deserialize (strategy {tag!r}): {e}") from e
    if tag == TAG_BLOB:
        raise DeserializationError("this is a reference to a result blob kept by the broker: "
                                 "read the value with Client.get_result or a future")
    raise DeserializationError(f"unknown serialization strategy {tag!r}")


def deserialize_args(data: str) -> tuple[tuple, dict]:
    value = deserialize(data)
    if isinstance(value, list):  # JSON turns the (args, kwargs) tuple into a list
        args, kwargs = value
        return tuple(args), kwargs
    return value


def versions() -> dict[str, str]:
    """The interpreter and dill versions, recorded with each result to explain mismatches."""
    return {
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "dill_version": dill.__version__,
    }
