"""Results larger than a message may carry travel as blobs kept by the broker.

The endpoint uploads the serialized result to the broker and sends, in place of the value, a
reference: the serialized-value string ``"05\\n{"size": N, "sha256": HEX}"`` (strategy tag
``05`` of :mod:`fnrelay.serialize`). The broker stores the reference like any other result
text; the SDK fetches the blob when the value is asked for and checks its size and digest, so
users never see the indirection. Only the SDK (and the worker) ever deserialize.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from fnrelay.errors import SerializationError
from fnrelay.serialize import TAG_BLOB

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobRef:
    """What a result message says about a blob: its length in bytes and its SHA-256."""

    size: int
    sha256: str


def reference(size: int, sha256: str) -> str:
    """The result text that stands for a blob."""
    return f"{TAG_BLOB}\n" + json.dumps({"size": size, "sha256": sha256},
                                        separators=(",", ":"))


def describe(data: bytes) -> BlobRef:
    """The reference of `data` (the UTF-8 bytes of a serialized result)."""
    return BlobRef(len(data), hashlib.sha256(data).hexdigest())


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def parse_reference(result: str | None) -> BlobRef | None:
    """The BlobRef in `result`, or None for an ordinary serialized value."""
    if not result or not result.startswith(TAG_BLOB + "\n"):
        return None
    try:
        d = json.loads(result[len(TAG_BLOB) + 1:])
        size, sha = d["size"], d["sha256"]
    except (ValueError, TypeError, KeyError) as e:
        raise SerializationError(f"malformed result blob reference: {e}") from None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0 or not is_sha256(sha):
        raise SerializationError("malformed result blob reference: bad size or sha256")
    return BlobRef(size, sha)


def resolve(task_id: str, result: str | None, fetch: Callable[[str], bytes]) -> str | None:
    """`result` itself, or, for a blob reference, the blob fetched with `fetch(task_id)` and
    checked against the reference (so a truncated or mixed-up download is never unpickled)."""
    ref = parse_reference(result)
    if ref is None:
        return result
    data = fetch(task_id)
    got = describe(data)
    if got != ref:
        raise SerializationError(
            f"the result blob of task {task_id} does not match its reference "
            f"({got.size} bytes, sha256 {got.sha256[:12]}…; expected {ref.size} bytes, "
            f"sha256 {ref.sha256[:12]}…)")
    return data.decode()
