"""Logging in and out: password check behind the rate limiter, session tokens, lockouts in the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loa.control_plane import audit, users
from loa.control_plane.auth import Actor, Principal
from loa.control_plane.errors import RateLimitedError, UnauthorizedError
from loa.control_plane.settings import ControlPlane

__all__ = ["Session", "login", "logout"]


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    expires_at: datetime
    user: users.UserRecord


def login(cp: ControlPlane, username: str, password: str, *, source: str | None) -> Session:
    """Check a password and open a session.

    Raises :class:`RateLimitedError` (before looking at the password) while the username or the source address is
    locked out, and :class:`UnauthorizedError` (the same message whether or not the user exists) for a wrong
    password or a disabled user.
    """
    key_user = ("user", username.strip().lower()[:64])
    keys = [key_user, ("addr", source or "unknown")]
    wait = cp.limiter.retry_after(keys, cp.settings.monotonic())
    if wait > 0:
        raise RateLimitedError(f"too many failed logins; try again in {round(wait + 0.5)} s", retry_after=wait)
    with cp.db.write() as tx:
        user = users.verify_login(tx, cp.passwords, username, password)
        if user is not None:
            token, record = users.issue_token(tx, user, kind="session", name="login", ttl=cp.settings.session_ttl)
            audit.record(tx, actor=user.username, source=source, action="login", target=user.username,
                         details={"session": record.id})
    if user is None:
        lockout = cp.limiter.failure(keys, cp.settings.monotonic())
        if lockout > 0:
            with cp.db.write() as tx:
                audit.record(tx, actor="system", source=source, action="login.lockout", target=key_user[1],
                             details={"seconds": round(lockout)})
        raise UnauthorizedError("wrong username or password")
    cp.limiter.success(key_user)
    assert record.expires_at is not None
    return Session(token, record.expires_at, user)


def logout(cp: ControlPlane, principal: Principal, *, source: str | None) -> None:
    """Revoke the token the request came with (a session, or an API token used as one)."""
    with cp.db.write() as tx:
        users.revoke_token(tx, Actor(principal.username, source), principal.user_id, principal.token_id,
                           action="logout")
