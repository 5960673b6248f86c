"""A database that does not answer is a 503 that says so, not a 500.

Every request reads the database (the token first), so with PostgreSQL down each one used to
fail as ``500 internal error: OperationalError``, which a user could not tell from a bug. Now
the answer is ``503 database unavailable: ...``, which the SDK retries like any 503 and then
shows; the broker's log has the driver's own message (without the password).
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fnrelay_broker.db import redact, redact_url
from fnrelay_broker.errors import error_response

log = logging.getLogger(__name__)

#: Errors of a database that cannot be reached, or of a pool with no connection to give.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
LOG_EVERY = 30.0  # seconds between two log lines of one outage


def describe(db_url: str) -> str:
    """The database as users may be told: its kind and name, not its host or credentials."""
    try:
        url = make_url(db_url)
    except (ArgumentError, ValueError):
        return "the broker's database"
    kind = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(url.get_backend_name(),
                                                                 url.get_backend_name())
    name = url.database if url.get_backend_name() != "sqlite" else None
    return f"the broker's {kind} database" + (f" {name!r}" if name else "")


def install(app: FastAPI, db_url: str) -> None:
    """Answer 503 for requests that failed because the database is unavailable."""
    what = describe(db_url)
    last_logged = [0.0]

    async def unavailable(_req: Request, exc: Exception) -> JSONResponse:
        if time.monotonic() - last_logged[0] > LOG_EVERY:
            last_logged[0] = time.monotonic()
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[:1]
            log.error("database %s unavailable: %s", redact_url(db_url),
                      redact(first[0] if first else type(exc).__name__, db_url))
        return error_response(503, f"database unavailable: {what} does not answer "
                                   f"({type(exc).__name__}); retry later")

    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, unavailable)
