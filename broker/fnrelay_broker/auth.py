"""Users and API tokens. Tokens are random; only their SHA-256 digests are stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fnrelay.wire import now
from fnrelay_broker.db import Database
from fnrelay_broker.models import Endpoint, Token, User


class UserExistsError(Exception):
    """A username that is already taken."""


@dataclass(frozen=True)
class CurrentUser:
    """Who a request acts for. `endpoint_id` set: an endpoint token scoped to that endpoint."""

    id: str
    username: str
    endpoint_id: str | None = None

    @property
    def is_endpoint_token(self) -> bool:
        return self.endpoint_id is not None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(db: Database, username: str) -> tuple[str, str]:
    """Create a user with one token; returns (user_id, token). The token is not stored."""
    user_id = str(uuid.uuid4())
    token = new_token()
    try:
        with db.write() as s:
            if s.scalar(select(User.id).where(User.username == username)):
                raise UserExistsError(f"user {username!r} already exists")
            s.add(User(id=user_id, username=username, created=now()))
            s.flush()
            s.add(Token(hash=hash_token(token), user_id=user_id, kind="user", created=now()))
    except IntegrityError as e:
        raise UserExistsError(f"user {username!r} already exists") from e
    return user_id, token


def create_token(db: Database, username: str, endpoint_id: str | None = None) -> str:
    """A further token for an existing user; with `endpoint_id`, an endpoint token that may
    only register that endpoint, one of the user's (it cannot submit or read tasks, nor
    change the endpoint's policy)."""
    token = new_token()
    kind = "endpoint" if endpoint_id else "user"
    with db.write() as s:
        user_id = s.scalar(select(User.id).where(User.username == username))
        if not user_id:
            raise LookupError(f"no user {username!r}")
        if endpoint_id is not None:
            ep = s.get(Endpoint, endpoint_id)
            if ep is None or ep.owner != user_id:
                raise LookupError(f"user {username!r} has no endpoint {endpoint_id} (register "
                                  "it first: `fnrelay-endpoint start` with a user token)")
        s.add(Token(hash=hash_token(token), user_id=user_id, kind=kind,
                    endpoint_id=endpoint_id, created=now()))
    return token


def revoke_token(db: Database, token: str) -> bool:
    """Revoke a token; False if it is unknown or already revoked."""
    with db.write() as s:
        row = s.get(Token, hash_token(token))
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = now()
    return True


def lookup_token(db: Database, token: str) -> CurrentUser | None:
    """The user a live token belongs to, or None."""
    return lookup_digest(db, hash_token(token))


def lookup_digest(db: Database, digest: str) -> CurrentUser | None:
    """The user of the live token with this digest, or None (dashboard sessions keep the
    digest, never the token)."""
    with db.read() as s:
        row = s.execute(
            select(Token.hash, Token.revoked_at, Token.kind, Token.endpoint_id, User.id,
                   User.username)
            .join(User, User.id == Token.user_id)
            .where(Token.hash == digest)
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.hash, digest):  # constant-time check of what we matched
        return None
    if row.kind != "user" and not row.endpoint_id:
        return None  # an endpoint token without its endpoint: never a user token
    return CurrentUser(id=row.id, username=row.username,
                       endpoint_id=row.endpoint_id if row.kind != "user" else None)
