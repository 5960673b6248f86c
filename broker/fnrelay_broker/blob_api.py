"""The REST routes of result blobs: endpoints upload, task owners download (docs/protocol.md).

    PUT /v1/endpoints/{endpoint_id}/blobs/{task_id}   the endpoint the task was routed to
    GET /v1/tasks/{task_id}/blob                      the task's owner (others: 404)

Uploads are raw bytes (application/octet-stream, never base64 in JSON) with the SHA-256 the
endpoint computed in `X-Fnrelay-Sha256`; they bypass the request payload limit (PayloadLimit
exempts them) and are held to the blob limit instead, counted as they stream in.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from fnrelay.blobs import BlobRef, is_sha256
from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.blobs import BlobStore
from fnrelay_broker.db import Database
from fnrelay_broker.errors import ApiError

SHA256_HEADER = "X-Fnrelay-Sha256"
_UPLOAD_PATH = re.compile(r"/v1/endpoints/[^/]+/blobs/[^/]+")


def is_upload(scope: Scope) -> bool:
    """True for blob uploads, which PayloadLimit leaves to the route's own blob limit."""
    path = scope.get("path", "")
    return scope.get("method") == "PUT" and _UPLOAD_PATH.fullmatch(path) is not None


def _mb(n: int) -> str:
    return f"{n} bytes ({n / 1_000_000:.1f} MB)"


def install(app: FastAPI, db: Database, store: BlobStore | None,
            authenticate: Callable[[Request], CurrentUser],
            for_user: Callable[[CurrentUser], CurrentUser],
            for_endpoint: Callable[[CurrentUser, str], None]) -> None:
    """Add the blob routes; `authenticate`, `for_user` and `for_endpoint` are the API's own
    token checks (any token, user tokens only, a token that may act for an endpoint).
    Without a store, blobs kept in the database earlier can still be read."""
    reader = store or BlobStore(db, limit=0)

    @app.put("/v1/endpoints/{endpoint_id}/blobs/{task_id}")
    async def upload_blob(endpoint_id: uuid.UUID, task_id: uuid.UUID,
                          request: Request) -> dict:
        eid, tid = str(endpoint_id), str(task_id)
        user = await run_in_threadpool(authenticate, request)
        for_endpoint(user, eid)
        if store is None:
            raise ApiError(404, "this broker keeps no result blobs (start it with --blob-store)")
        expected = _expected(request, store.limit)
        await run_in_threadpool(store.check_uploader, user.id, eid, tid)
        spool = await _receive(request, store)
        try:
            if spool[1] != expected:
                raise ApiError(400, f"the blob received ({spool[1].size} bytes) does not match "
                                    f"its {SHA256_HEADER} and Content-Length; upload it again")
            stored = await run_in_threadpool(store.put, user.id, eid, tid, spool[0], expected)
        finally:
            spool[0].unlink(missing_ok=True)
        return {"task_id": tid, "size": expected.size, "sha256": expected.sha256,
                "stored": stored}

    @app.get("/v1/tasks/{task_id}/blob")
    def download_blob(task_id: uuid.UUID, request: Request) -> StreamingResponse:
        user = for_user(authenticate(request))
        blob = reader.get(user.id, str(task_id))
        return StreamingResponse(blob.pieces, media_type="application/octet-stream",
                                 headers={"Content-Length": str(blob.size),
                                          SHA256_HEADER: blob.sha256})


def _expected(request: Request, limit: int) -> BlobRef:
    """The size and digest the endpoint announces; 411/413/400 before any byte is read."""
    sha = (request.headers.get(SHA256_HEADER) or "").lower()
    if not is_sha256(sha):
        raise ApiError(400, f"missing or malformed {SHA256_HEADER} header (64 hex digits)")
    try:
        size = int(request.headers["content-length"])
    except (KeyError, ValueError):
        raise ApiError(411, "a blob upload needs a Content-Length header", "LENGTH_REQUIRED") \
            from None
    if size > limit:
        raise ApiError(413, f"result blob of {_mb(size)} exceeds the broker's blob limit of "
                            f"{_mb(limit)}")
    return BlobRef(size, sha)


async def _receive(request: Request, store: BlobStore) -> tuple[Path, BlobRef]:
    """Stream the body into a spool file, hashing and counting it; 413 past the limit."""
    fd, path = store.spool()
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for piece in request.stream():
                size += len(piece)
                if size > store.limit:
                    raise ApiError(413, f"result blob of more than {_mb(store.limit)} exceeds "
                                        "the broker's blob limit")
                h.update(piece)
                f.write(piece)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, BlobRef(size, h.hexdigest())
