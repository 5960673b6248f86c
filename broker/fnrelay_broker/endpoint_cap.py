"""How many endpoints one user may have (`--max-endpoints-per-user`).

Each endpoint costs the service a RabbitMQ account, a task queue (a manager: a control queue
too) and a queue probe per /metrics scrape. Without a cap one tenant could make them without
end: by registering endpoints, or by submitting to a multi-user endpoint with ever-different
`user_endpoint_config`s, each of which makes a child endpoint owned by the submitter. Both
count here, so neither way passes it.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from fnrelay_broker.errors import ApiError
from fnrelay_broker.models import Endpoint

CODE = "TOO_MANY_ENDPOINTS"


def lock_user(s: Session, user_id: str) -> None:
    """Serialize one user's counted writes (quota, endpoint cap) until the transaction ends:
    SQLite's write transactions are serial already; on PostgreSQL a transaction-scoped
    advisory lock on the user makes them so (else concurrent requests would all count the
    same total and pass a limit together). Taking it twice in one transaction is harmless."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:user_id))"),
                  {"user_id": user_id})


def check(s: Session, user_id: str, limit: int) -> None:
    """ApiError 403 TOO_MANY_ENDPOINTS if the user may not have one endpoint more; 0: no
    limit. Not 429: waiting does not help (deleting an endpoint does), and clients retry
    429s by themselves."""
    if not limit:
        return
    lock_user(s, user_id)
    have = s.scalar(select(func.count()).select_from(Endpoint)
                    .where(Endpoint.owner == user_id)) or 0
    if have >= limit:
        raise ApiError(403, f"too many endpoints: you have {have} (child endpoints that "
                            "multi-user endpoints made for your tasks included), the "
                            f"broker's limit of {limit} per user; delete ones you no "
                            "longer use (fnrelay-endpoint delete NAME, or DELETE "
                            "/v1/endpoints/ID, a child's too)", code=CODE)
