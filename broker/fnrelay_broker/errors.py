"""API errors as JSON `{"code", "message", "http_status"}`, the shape globus-sdk reads."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "INVALID_REQUEST",
    429: "TOO_MANY_QUEUED_TASKS",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    def __init__(self, http_status: int, message: str, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.code = code or CODES.get(http_status, "ERROR")
        #: Seconds after which the same request may succeed (a Retry-After header).
        self.retry_after = retry_after


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, f"{kind} {ident} not found")


def error_response(http_status: int, message: str, code: str | None = None,
                   retry_after: int | None = None) -> JSONResponse:
    code = code or CODES.get(http_status, "ERROR")
    headers = {"WWW-Authenticate": "Bearer"} if http_status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(
        {"code": code, "message": message, "http_status": http_status},
        status_code=http_status,
        headers=headers,
    )


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_req: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.http_status, exc.message, exc.code, exc.retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = []
        for err in exc.errors()[:5]:
            where = _field(tuple(err.get("loc", ())))
            msgs.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid request: " + "; ".join(msgs))

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}", "INTERNAL_ERROR")
