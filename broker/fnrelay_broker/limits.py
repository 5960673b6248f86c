"""Refuse request bodies above the payload limit before any route (or the database) sees them."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fnrelay_broker.errors import error_response


def _mb(n: int) -> str:
    return f"{n} bytes ({n / 1_000_000:.1f} MB)"


class PayloadLimit:
    """Pure ASGI middleware: answers 413 PAYLOAD_TOO_LARGE stating the size and the limit.

    A declared Content-Length is checked first; a chunked body is counted as it is read
    (buffered up to the limit, then replayed to the app). Requests `exempt(scope)` picks
    (result blob uploads) stream to their route, which enforces a limit of its own.
    """

    def __init__(self, app: ASGIApp, limit: int,
                 exempt: Callable[[Scope], bool] | None = None):
        self.app, self.limit, self.exempt = app, limit, exempt

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        msg = (
            f"request body of {size} exceeds the broker's payload limit of {_mb(self.limit)}; "
            "submit fewer or smaller tasks per request"
        )
        await error_response(413, msg)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope)):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > self.limit:
                await self._refuse(scope, receive, send, _mb(length))
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, receive, send, f"more than {_mb(self.limit)}")
                return
            chunks.append(body)
            more = message.get("more_body", False)
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
