"""User accounts, bearer tokens and login (with rate limiting), and the first administrator.

Usernames are case-insensitive (stored lower case): letters, digits, ``.``, ``_``, ``-``, ``@``. Logging in
returns a *session* token (expires after ``session_ttl``); users may also create named *API* tokens for scripts.
Both are shown once and stored as SHA-256. Disabling a user or resetting their password revokes all their
tokens. A user whose password was set by someone else (the first admin, a reset) must change it before doing
anything else.

Failure semantics: functions that write validate first and raise a :mod:`loa.control_plane.errors` error with
nothing written; every change writes its audit entry in the caller's transaction.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from loa.control_plane import audit, zones
from loa.control_plane.auth import ROLES, Actor, Passwords, Principal, new_token, token_digest
from loa.control_plane.db import Database, Tx
from loa.control_plane.db.schema import NAME_LEN, api_tokens, users
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError

__all__ = [
    "FIRST_ADMIN",
    "TokenRecord",
    "UserRecord",
    "change_password",
    "check_username",
    "create_user",
    "ensure_first_admin",
    "get_user",
    "issue_token",
    "list_tokens",
    "list_users",
    "reset_password",
    "resolve_token",
    "revoke_token",
    "update_user",
]

FIRST_ADMIN = "admin"
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
LAST_USED_PRECISION = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    display_name: str
    role: str
    scope: str | None
    disabled: bool
    must_change_password: bool
    created_at: datetime
    password_changed_at: datetime


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    kind: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def check_username(username: str) -> str:
    name = unicodedata.normalize("NFC", username).strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise InvalidError("a username is 1-64 characters: letters a-z, digits, '.', '_', '-', '@', "
                           "starting with a letter or digit")
    return name


def _display_name(name: str) -> str:
    name = unicodedata.normalize("NFC", name).strip()
    if len(name) > NAME_LEN or any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidError(f"display name must be at most {NAME_LEN} characters without control characters")
    return name


def _check_password(password: str) -> None:
    if not Passwords.MIN_LENGTH <= len(password) <= Passwords.MAX_LENGTH:
        raise InvalidError(f"a password has {Passwords.MIN_LENGTH}-{Passwords.MAX_LENGTH} characters")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidError(f"role must be one of {', '.join(ROLES)}")
    return role


def _user(row: Any) -> UserRecord:
    return UserRecord(row.id, row.username, row.display_name, row.role, row.scope, row.disabled,
                      row.must_change_password, row.created_at, row.password_changed_at)


def _token(row: Any) -> TokenRecord:
    return TokenRecord(row.id, row.kind, row.name, row.created_at, row.expires_at, row.last_used_at, row.revoked_at)


def get_user(conn: Connection, username: str) -> UserRecord:
    row = conn.execute(select(users).where(users.c.username == username.strip().lower())).one_or_none()
    if row is None:
        raise NotFoundError(f"no user {username!r}")
    return _user(row)


def list_users(conn: Connection, *, within: str | None = None, national_only: bool = False,
               role: str | None = None, disabled: bool | None = None, after: str | None = None,
               limit: int = 100) -> list[UserRecord]:
    """Users by username; ``within``: only those whose scope lies in that subtree."""
    query = select(users).order_by(users.c.username).limit(limit)
    if within is not None:
        query = query.where(users.c.scope.in_(zones.subtree_codes(within)))
    if national_only:
        query = query.where(users.c.scope.is_(None))
    if role is not None:
        query = query.where(users.c.role == role)
    if disabled is not None:
        query = query.where(users.c.disabled == disabled)
    if after is not None:
        query = query.where(users.c.username > after)
    return [_user(r) for r in conn.execute(query)]


def create_user(tx: Tx, actor: Actor, passwords: Passwords, *, username: str, role: str, scope: str | None,
                display_name: str = "", password: str | None = None) -> tuple[UserRecord, str | None]:
    """Create a user; without ``password`` one is generated, returned once, and must be changed at first login."""
    name, role, shown = check_username(username), _check_role(role), None
    if scope is not None:
        zones.get(tx.conn, scope)
    if password is None:
        password = shown = Passwords.generate()
    _check_password(password)
    if tx.conn.execute(select(users.c.id).where(users.c.username == name)).first() is not None:
        raise ConflictError(f"user {name!r} already exists")
    tx.conn.execute(insert(users).values(
        username=name, display_name=_display_name(display_name), password_hash=passwords.hash(password),
        role=role, scope=scope, must_change_password=shown is not None, created_at=tx.now,
        password_changed_at=tx.now))
    record = get_user(tx.conn, name)
    audit.record(tx, actor=actor.name, source=actor.source, action="user.create", target=name,
                 details={"role": role, "scope": scope, "display_name": record.display_name})
    return record, shown


def _national_admins(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).where(
        users.c.role == "admin", users.c.scope.is_(None), users.c.disabled.is_(False))).scalar_one())


def update_user(tx: Tx, actor: Actor, username: str, *, role: str | None = None, scope: str | None = None,
                national: bool = False, display_name: str | None = None,
                disabled: bool | None = None) -> UserRecord:
    """Change role, scope (``national=True`` for national scope), display name or disabled; keeps at least one
    enabled national admin, and revokes every token of a user who is disabled."""
    before = get_user(tx.conn, username)
    changes: dict[str, Any] = {}
    if role is not None and _check_role(role) != before.role:
        changes["role"] = role
    if national and before.scope is not None:
        changes["scope"] = None
    elif scope is not None and scope != before.scope:
        zones.get(tx.conn, scope)
        changes["scope"] = scope
    if display_name is not None and _display_name(display_name) != before.display_name:
        changes["display_name"] = _display_name(display_name)
    if disabled is not None and disabled != before.disabled:
        changes["disabled"] = disabled
    if not changes:
        return before
    tx.conn.execute(update(users).where(users.c.id == before.id).values(**changes))
    if before.role == "admin" and before.scope is None and not before.disabled and _national_admins(tx.conn) == 0:
        raise ConflictError("this would leave no enabled national admin")
    if changes.get("disabled"):
        _revoke_all(tx, before.id)
    audit.record(tx, actor=actor.name, source=actor.source, action="user.update", target=before.username,
                 details={"before": {k: getattr(before, k) for k in changes}, "after": changes})
    return get_user(tx.conn, before.username)


def _revoke_all(tx: Tx, user_id: int) -> None:
    tx.conn.execute(update(api_tokens).where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
                    .values(revoked_at=tx.now))


def reset_password(tx: Tx, actor: Actor, passwords: Passwords, username: str) -> str:
    """Give a user a new random password (returned once; they must change it) and revoke all their tokens."""
    user = get_user(tx.conn, username)
    password = Passwords.generate()
    tx.conn.execute(update(users).where(users.c.id == user.id).values(
        password_hash=passwords.hash(password), must_change_password=True, password_changed_at=tx.now))
    _revoke_all(tx, user.id)
    audit.record(tx, actor=actor.name, source=actor.source, action="user.password_reset", target=user.username)
    return password


def change_password(tx: Tx, principal: Principal, passwords: Passwords, *, current: str, new: str,
                    source: str | None) -> None:
    """A user changes their own password; every other token of theirs is revoked."""
    row = tx.conn.execute(select(users.c.password_hash).where(users.c.id == principal.user_id)).one()
    if not passwords.verify(row.password_hash, current):
        raise ForbiddenError("the current password is wrong")
    _check_password(new)
    if new == current:
        raise InvalidError("the new password must differ from the current one")
    tx.conn.execute(update(users).where(users.c.id == principal.user_id).values(
        password_hash=passwords.hash(new), must_change_password=False, password_changed_at=tx.now))
    tx.conn.execute(update(api_tokens).where(api_tokens.c.user_id == principal.user_id,
                                             api_tokens.c.id != principal.token_id,
                                             api_tokens.c.revoked_at.is_(None)).values(revoked_at=tx.now))
    audit.record(tx, actor=principal.username, source=source, action="user.password_change",
                 target=principal.username)


def verify_login(tx: Tx, passwords: Passwords, username: str, password: str) -> UserRecord | None:
    """The user if ``password`` is theirs and they are enabled, else None (same work either way).

    Rehashes the password when the hashing parameters have changed since it was stored.
    """
    try:
        name = check_username(username)
    except InvalidError:
        name = ""
    row = tx.conn.execute(select(users).where(users.c.username == name)).one_or_none() if name else None
    ok = passwords.verify(row.password_hash if row is not None else None, password)
    if row is None or not ok or row.disabled:
        return None
    if passwords.needs_rehash(row.password_hash):
        tx.conn.execute(update(users).where(users.c.id == row.id).values(password_hash=passwords.hash(password)))
    return _user(row)


def issue_token(tx: Tx, user: UserRecord, *, kind: str, name: str = "", ttl: timedelta | None = None,
                actor: Actor | None = None) -> tuple[str, TokenRecord]:
    """A new bearer token for ``user`` (returned once). API tokens are audited; sessions are audited as logins."""
    token = new_token()
    result = tx.conn.execute(insert(api_tokens).values(
        user_id=user.id, token_hash=token_digest(token), kind=kind, name=_display_name(name), created_at=tx.now,
        expires_at=tx.now + ttl if ttl is not None else None))
    token_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    record = _token(tx.conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).one())
    if actor is not None:
        audit.record(tx, actor=actor.name, source=actor.source, action=f"token.create.{kind}", target=user.username,
                     details={"token": record.id, "name": record.name})
    return token, record


def resolve_token(db: Database, token: str) -> Principal | None:
    """The user behind a bearer token, or None if it is unknown, revoked, expired or its user is disabled."""
    digest = token_digest(token)
    with db.read() as conn:
        row = conn.execute(
            select(api_tokens.c.id, api_tokens.c.kind, api_tokens.c.expires_at, api_tokens.c.last_used_at,
                   api_tokens.c.revoked_at, users.c.id.label("user_id"), users.c.username, users.c.role,
                   users.c.scope, users.c.disabled, users.c.must_change_password)
            .join(users, users.c.id == api_tokens.c.user_id).where(api_tokens.c.token_hash == digest)).one_or_none()
    now = db.clock()
    if row is None or row.revoked_at is not None or row.disabled or (
            row.expires_at is not None and row.expires_at <= now):
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
        with db.write() as tx:
            tx.conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_at=tx.now))
    return Principal(row.user_id, row.username, row.role, row.scope, row.id, row.kind, row.must_change_password)


def list_tokens(conn: Connection, user_id: int, *, now: datetime) -> list[TokenRecord]:
    """A user's live API tokens (sessions are not listed)."""
    query = (select(api_tokens).where(api_tokens.c.user_id == user_id, api_tokens.c.kind == "api",
                                      api_tokens.c.revoked_at.is_(None))
             .order_by(api_tokens.c.id))
    return [t for t in map(_token, conn.execute(query)) if t.expires_at is None or t.expires_at > now]


def revoke_token(tx: Tx, actor: Actor, user_id: int, token_id: int, *, action: str = "token.revoke") -> None:
    """Revoke one of ``user_id``'s tokens (NotFound if it is not theirs or already revoked)."""
    row = tx.conn.execute(select(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.user_id == user_id,
                                                   api_tokens.c.revoked_at.is_(None))).one_or_none()
    if row is None:
        raise NotFoundError(f"no live token {token_id} of yours")
    tx.conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=tx.now))
    audit.record(tx, actor=actor.name, source=actor.source, action=action, target=str(token_id),
                 details={"kind": row.kind})


def ensure_first_admin(db: Database, passwords: Passwords) -> tuple[str, str] | None:
    """On a database without users, create the national admin ``admin`` with a random one-time password.

    Returns ``(username, password)`` to show once, or None if users exist. Safe to call on every start.
    """
    try:
        with db.write() as tx:
            if tx.conn.execute(select(users.c.id).limit(1)).first() is not None:
                return None
            _, password = create_user(tx, Actor("system"), passwords, username=FIRST_ADMIN, role="admin",
                                      scope=None, display_name="First administrator")
    except IntegrityError:  # another process created it at the same moment
        return None
    assert password is not None
    return FIRST_ADMIN, password
