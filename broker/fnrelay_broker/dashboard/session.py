"""Dashboard sessions: a signed cookie that names a token by its digest, and CSRF tokens.

The cookie holds `<token digest>.<expiry>.<mac>`, never the token: the database stores only
digests too, so a leaked cookie gives no API token, and revoking the token ends every session
made with it (each request looks the digest up). The MAC key is a broker secret in the
database, so every replica accepts every replica's cookies. A form's CSRF token is a MAC of
the session value: a page of another site can neither read it nor compute it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy.exc import IntegrityError

from fnrelay_broker import auth
from fnrelay_broker.db import Database
from fnrelay_broker.models import BrokerSecret

COOKIE = "fnrelay_session"
SECRET_NAME = "dashboard-sessions"
#: How long a login lasts: a working day, then the token is pasted again.
LIFETIME = 12 * 3600.0


def load_key(db: Database) -> bytes:
    """The key sessions are signed with (made on first use; replicas share it)."""
    with db.read() as s:
        row = s.get(BrokerSecret, SECRET_NAME)
        if row is not None:
            return bytes.fromhex(row.value)
    try:
        with db.write() as s:
            s.add(BrokerSecret(name=SECRET_NAME, value=secrets.token_hex(32)))
    except IntegrityError:  # another replica made it first: use theirs
        pass
    with db.read() as s:
        row = s.get(BrokerSecret, SECRET_NAME)
        assert row is not None
        return bytes.fromhex(row.value)


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
        body = f"{auth.hash_token(token)}.{int(time.time() + LIFETIME)}"
        return f"{body}.{self._mac('session', body)}", user

    def user(self, cookie: str | None) -> auth.CurrentUser | None:
        """The user of a genuine, unexpired session whose token is still live."""
        if not cookie or cookie.count(".") != 2:
            return None
        digest, expiry, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", f"{digest}.{expiry}")):
            return None
        if not expiry.isdigit() or int(expiry) < time.time():
            return None
        user = auth.lookup_digest(self.db, digest)
        return None if user is None or user.is_endpoint_token else user

    def csrf(self, cookie: str) -> str:
        """The CSRF token of the forms of this session."""
        return self._mac("csrf", cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(
            self.csrf(cookie or ""), token or "")
