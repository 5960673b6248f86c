"""JSON in and out, and the one error every decoder raises.

Decoders check every field's type here, once, so no consumer restates the contract: the
broker adds only its database's own rule (`check`), the endpoint and the Executor none.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from typing import Any


class WireError(ValueError):
    """A malformed message or record: wrong JSON, wrong shape, a field of the wrong type.

    A ValueError, so consumers that refuse (dead-letter) a message by ValueError keep doing so.
    """


#: A further rule a consumer applies to a decoded document before it is typed (the broker's
#: database-safety check); its ValueError becomes a WireError.
Check = Callable[[Any], object]

#: A dataclass field's metadata that keeps it out of the encoded message: what one process
#: notes on a message for itself (the broker, a result's task format).
LOCAL: dict[str, Any] = {"wire": False}


def encode(obj: Any) -> bytes:
    """JSON-encode a message body (dataclasses become dicts, less fields marked LOCAL)."""

    def default(o: Any) -> Any:
        fields = getattr(o, "__dataclass_fields__", None)
        if fields is not None:  # shallow: json walks the values (asdict would copy them all)
            return {name: getattr(o, name) for name, f in fields.items()
                    if f.metadata.get("wire", True)}
        if isinstance(o, enum.Enum):
            return o.value
        raise TypeError(f"cannot encode {type(o).__name__} in a message")

    return json.dumps(obj, default=default, separators=(",", ":")).encode()


def decode(body: bytes | str, *, finite: bool = False) -> Any:
    """Decode a message body; WireError on malformed input. With `finite`, NaN, Infinity and
    floats beyond range (which Python's json reads and writes) come out as None: a database's
    JSON (PostgreSQL's) and JSON responses have no such numbers."""
    try:
        if finite:
            return json.loads(body, parse_constant=_none, parse_float=_finite_or_none)
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"malformed fnrelay message: {e}") from e
    except RecursionError as e:  # not a ValueError: a consumer would take it for its own bug
        raise WireError("malformed fnrelay message: nested too deeply") from e


def _none(_constant: str) -> None:
    return None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def document(body: bytes | str, *, finite: bool = False, check: Check | None = None
             ) -> dict[str, Any]:
    """The JSON object of a body, after `check`; WireError for anything else."""
    doc = decode(body, finite=finite)
    if not isinstance(doc, dict):
        raise WireError("malformed fnrelay message: the body is not an object")
    if check is not None:
        try:
            check(doc)
        except ValueError as e:
            raise WireError(str(e)) from e
    return doc


def items(body: bytes | str, key: str, *, finite: bool = False, check: Check | None = None
          ) -> list[dict[str, Any]]:
    """The list of objects under `key` of a body's object; WireError for any other shape."""
    found = document(body, finite=finite, check=check).get(key)
    if not isinstance(found, list) or not all(isinstance(i, dict) for i in found):
        raise WireError(f"malformed fnrelay message: '{key}' must be a list of objects")
    return found


# --- field checks: each returns the field's value, or raises WireError naming it ------------
def _wrong(key: str, want: str, value: object, optional: bool) -> WireError:
    return WireError(f"{key!r} must be {want}{' or null' if optional else ''}, "
                     f"not {type(value).__name__}")


def text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise _wrong(key, "str", value, False)
    return value


def opt_text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong(key, "str", value, True)
    return value


def obj(item: dict[str, Any], key: str) -> dict[str, Any]:
    """An object field; null or absent is the empty object."""
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _wrong(key, "dict", value, True)
    return value


def opt_int(item: dict[str, Any], key: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(key, "int", value, True)
    return value


def opt_count(item: dict[str, Any], key: str) -> int | None:
    """A non-negative integer field, or None."""
    value = opt_int(item, key)
    if value is not None and value < 0:
        raise WireError(f"{key!r} must not be negative")
    return value


def opt_number(item: dict[str, Any], key: str) -> float | None:
    value = item.get(key)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise _wrong(key, "int or float", value, True)
    return value


def flag(item: dict[str, Any], key: str) -> bool:
    """A boolean field; null or absent is false."""
    value = item.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong(key, "bool", value, True)
    return value
