"""/api/v1/users: accounts, managed by admins within their scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from loa.control_plane import auth, users
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, Source, actor, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.errors import ForbiddenError

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=PROBLEM_RESPONSES)
Username = Annotated[str, Path(pattern=m.USERNAME_PATTERN)]


@router.get("", response_model=m.UserPage, **guard("users.read"))
def list_users(*, cp: CP, caller: Caller, role: m.Role | None = None, disabled: bool | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> m.UserPage:
    """Users whose scope lies within mine, by username."""
    with cp.db.read() as conn:
        found = users.list_users(conn, within=caller.scope, role=role, disabled=disabled,
                                 after=decode_cursor(cursor, str), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return m.UserPage(items=[m.User.of(u) for u in found],
                      next_cursor=encode_cursor(found[-1].username) if more else None)


@router.post("", status_code=201, response_model=m.UserCreated, **guard("users.write"))
def create_user(body: m.UserCreate, cp: CP, caller: Caller, source: Source) -> m.UserCreated:
    """Create a user in my scope. Without a password, a one-time password is generated and returned once."""
    with cp.db.write() as tx:
        auth.require_zone(tx.conn, caller, body.scope)
        user, password = users.create_user(tx, actor(caller, source), cp.passwords, username=body.username,
                                           role=body.role, scope=body.scope, display_name=body.display_name,
                                           password=body.password)
    return m.UserCreated(user=m.User.of(user), password=password)


@router.get("/{username}", response_model=m.User, **guard("users.read"))
def get_user(username: Username, cp: CP, caller: Caller) -> m.User:
    with cp.db.read() as conn:
        user = users.get_user(conn, username)
        auth.require_zone(conn, caller, user.scope)
    return m.User.of(user)


@router.patch("/{username}", response_model=m.User, **guard("users.write"))
def patch_user(username: Username, body: m.UserPatch, cp: CP, caller: Caller, source: Source) -> m.User:
    """Change role, scope, display name or disabled. Scope null (given explicitly) means national scope."""
    given = body.model_fields_set
    with cp.db.write() as tx:
        user = users.get_user(tx.conn, username)
        auth.require_zone(tx.conn, caller, user.scope)
        if "scope" in given:
            auth.require_zone(tx.conn, caller, body.scope)
        if user.id == caller.user_id and given & {"role", "scope", "disabled"}:
            raise ForbiddenError("you cannot change your own role, scope or disabled state")
        updated = users.update_user(tx, actor(caller, source), user.username, role=body.role, scope=body.scope,
                                    national="scope" in given and body.scope is None,
                                    display_name=body.display_name, disabled=body.disabled)
    return m.User.of(updated)


@router.post("/{username}/password-reset", response_model=m.PasswordReset, **guard("users.write"))
def reset_password(username: Username, cp: CP, caller: Caller, source: Source) -> m.PasswordReset:
    """Give the user a new one-time password (returned once) and revoke their tokens."""
    with cp.db.write() as tx:
        user = users.get_user(tx.conn, username)
        auth.require_zone(tx.conn, caller, user.scope)
        if user.id == caller.user_id:
            raise ForbiddenError("change your own password with POST /api/v1/auth/password")
        password = users.reset_password(tx, actor(caller, source), cp.passwords, user.username)
    return m.PasswordReset(password=password)
