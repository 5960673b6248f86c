"""Sharing a single-user endpoint: only with a function allowlist.

A single-user endpoint runs every task as its owner, so running another user's code there
would hand that user the owner's account. Its owner may list `allowed_functions` in the
registration metadata: other users may then submit those functions (and only those) to it.
An entry is a function id of the owner's (matched by its code: another user's registration of
the same code has its own id) or the SHA-256 hex digest of a serialized function. Without a
list, the endpoint is the owner's alone (others get 404, as for an unknown endpoint). A
multi-user endpoint needs no list: each user's tasks run in a child as that user.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fnrelay.wire import FORMAT_FNRELAY
from fnrelay_broker.errors import ApiError
from fnrelay_broker.models import Endpoint, Function

KEY = "allowed_functions"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_ENTRIES = 10_000


def validate(metadata: dict[str, Any]) -> None:
    """422 unless `allowed_functions` is absent or a list of strings."""
    value = metadata.get(KEY)
    if value is None:
        return
    if (not isinstance(value, list) or len(value) > MAX_ENTRIES
            or not all(isinstance(v, str) and 0 < len(v) <= 200 for v in value)):
        raise ApiError(422, f"metadata.{KEY} must be a list of function ids or SHA-256 "
                            f"digests (at most {MAX_ENTRIES})")


def is_shared(ep: Endpoint) -> bool:
    return bool((ep.metadata_ or {}).get(KEY))


def check_allowed(s: Session, ep: Endpoint, function_ids: set[str]) -> None:
    """403 naming the first function of `function_ids` the endpoint's allowlist lacks."""
    entries = [str(v) for v in (ep.metadata_ or {}).get(KEY) or []]
    digests = {v for v in entries if _SHA256.match(v)}
    ids = [v for v in entries if v not in digests]
    if ids:
        digests |= set(s.scalars(select(Function.sha256).where(
            Function.id.in_(ids[:1000]), Function.owner == ep.owner)))
    rows = s.execute(select(Function.id, Function.sha256)
                     .where(Function.id.in_(sorted(function_ids)))).all()
    for fid, digest in sorted(rows):
        if fid not in entries and digest not in digests:
            raise ApiError(403, f"endpoint {ep.id} is another user's single-user endpoint: "
                                f"function {fid} is not in its allowed_functions (its owner "
                                "must list it, or run the endpoint in multi-user mode)")


#: The serialization tag of JSON (fnrelay.serialize.TAG_JSON): the one form of arguments that
#: deserializes without running code.
_JSON_PAYLOAD = "03\n"


def check_guest_tasks(ep: Endpoint, tasks: list[dict[str, Any]]) -> None:
    """403 unless another user's tasks leave the owner's endpoint nothing but data to run.

    The allowlist vets the functions; the endpoint unpickles the arguments as its owner, so a
    pickle there would run the guest's code as the owner. And `user_endpoint_config` fills the
    owner's templates (environments, packages to build): the owner's alone to choose."""
    for spec in tasks:
        if (spec.get("format") or FORMAT_FNRELAY) != FORMAT_FNRELAY:
            raise ApiError(403, f"endpoint {ep.id} is another user's, shared by "
                                "allowed_functions: only fnrelay-format tasks with JSON "
                                "arguments may go to it (Globus Compute's arguments are pickles)")
        if not str(spec.get("payload") or "").startswith(_JSON_PAYLOAD):
            raise ApiError(403, f"endpoint {ep.id} is another user's, shared by "
                                "allowed_functions: arguments must be plain JSON data (str, "
                                "int, bool, None, lists, dicts with str keys), as a pickle "
                                "would run as the endpoint's owner")
        if spec.get("user_endpoint_config"):
            raise ApiError(403, f"endpoint {ep.id} is another user's, shared by "
                                "allowed_functions: user_endpoint_config is its owner's to set")
