"""Dashboard sessions: a random session id in the cookie, its digest in the database, and
CSRF tokens.

The cookie holds only the session id; the database keeps its digest, the digest of the token
the user logged in with and the expiry (`DashboardSession`). So whoever reads the database (a
backup, a replica) can make no cookie, a leaked cookie gives no API token, revoking the token
ends every session made with it, and logout ends the session on the server. A form's CSRF token
is a MAC of the session id under a broker secret: a page of another site can neither read it
nor compute it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import delete

from fnrelay_broker import auth, queues
from fnrelay_broker.db import Database
from fnrelay_broker.models import DashboardSession

COOKIE = "fnrelay_session"
SECRET_NAME = "dashboard-sessions"
#: How long a login lasts: a working day, then the token is pasted again.
LIFETIME = 12 * 3600.0


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def load_key(db: Database) -> bytes:
    """The key CSRF tokens are made with (made on first use; replicas share it)."""
    return queues.shared_key(db, SECRET_NAME)


class Sessions:
    """Makes and checks session cookies and CSRF tokens under one key."""

    def __init__(self, db: Database, key: bytes):
        self.db, self.key = db, key

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self.key, f"{purpose}:{text}".encode(), hashlib.sha256).hexdigest()

    def login(self, token: str) -> tuple[str, auth.CurrentUser] | None:
        """(cookie value, user) for a live user token; None for anything else."""
        user = auth.lookup_token(self.db, token)
        if user is None or user.is_endpoint_token:
            return None
        session_id, now = secrets.token_urlsafe(32), time.time()
        with self.db.write() as s:
            s.execute(delete(DashboardSession).where(DashboardSession.expires < now))
            s.add(DashboardSession(id_digest=_digest(session_id),
                                   token_digest=auth.hash_token(token), expires=now + LIFETIME))
        return session_id, user

    def user(self, cookie: str | None) -> auth.CurrentUser | None:
        """The user of a live, unexpired session whose token is still live."""
        if not cookie or len(cookie) > 100:
            return None
        with self.db.read() as s:
            row = s.get(DashboardSession, _digest(cookie))
            if row is None or row.expires < time.time():
                return None
            token_digest = row.token_digest
        user = auth.lookup_digest(self.db, token_digest)
        return None if user is None or user.is_endpoint_token else user

    def logout(self, cookie: str | None) -> None:
        """End the session on the server: its cookie, wherever copied, no longer works."""
        if cookie and len(cookie) <= 100:
            with self.db.write() as s:
                s.execute(delete(DashboardSession)
                          .where(DashboardSession.id_digest == _digest(cookie)))

    def csrf(self, cookie: str) -> str:
        """The CSRF token of the forms of this session."""
        return self._mac("csrf", cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(
            self.csrf(cookie or ""), token or "")
