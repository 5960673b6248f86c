"""Request text the database can store: no NUL characters, no lone UTF-16 surrogates.

JSON allows both (``"\\u0000"``, ``"\\ud800"``), Python decodes them into `str`, and then the
database refuses them (SQLite: UnicodeEncodeError; PostgreSQL: NUL in text). Refusing them
at validation turns what would be a 500 into a 422 that names the field.

Numbers must be finite: Python's json reads ``Infinity`` and ``NaN``, which are not JSON
(RFC 8259), so a task stored with them could not be read back by a client in another language
(and PostgreSQL's json refuses them). REST requests holding them answer 422; endpoint
messages never hold them here, since `inbound` decodes them as null (a result is never
refused).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator

_BAD = re.compile("[\x00\ud800-\udfff]")
_MAX_DEPTH = 64


def _check_str(value: str) -> str:
    match = _BAD.search(value)
    if match:
        raise ValueError(
            f"text contains {'a NUL character' if match.group() == chr(0) else 'a lone surrogate'}"
            f" (U+{ord(match.group()):04X}) at offset {match.start()}"
        )
    return value


def check_tree(value: Any, depth: int = 0, text: bool = True) -> Any:
    """Raise ValueError for bad text (unless `text` is False: known clean) or a non-finite
    number anywhere in `value`, or nesting deeper than _MAX_DEPTH."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, str):
        if text:
            _check_str(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if text:
                _check_str(k)
            if not isinstance(v, str) or depth >= _MAX_DEPTH:
                check_tree(v, depth + 1, text)
            elif text:  # inline: a call per string was most of a record's check
                _check_str(v)
    elif isinstance(value, list):
        for v in value:
            check_tree(v, depth + 1, text)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number (only finite numbers are)")
    return value


#: What in a UTF-8 JSON text can decode to a NUL or a lone surrogate: their escapes, and a
#: surrogate's own UTF-8 bytes (json.loads decodes bytes with "surrogatepass").
_BAD_IN_JSON = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")


def check_body(body: bytes | str) -> Callable[[Any], Any]:
    """`check_tree` for the document of `body`, without looking at each string when the
    raw text cannot hold bad text (a false alarm only costs the full check). A message of
    a thousand direct-path records has a hundred thousand strings."""
    if isinstance(body, bytes) and json.detect_encoding(body) in ("utf-8", "utf-8-sig") and (
            (b"\\u" not in body and b"\xed" not in body) or _BAD_IN_JSON.search(body) is None):
        return _check_shape
    return check_tree


def _check_shape(value: Any) -> Any:
    return check_tree(value, text=False)


#: A string that is valid Unicode text without NUL.
Text = Annotated[str, AfterValidator(_check_str)]
#: A JSON object whose keys and string values are all `Text` and whose numbers are finite.
JsonObject = Annotated[dict[str, Any], AfterValidator(check_tree)]
