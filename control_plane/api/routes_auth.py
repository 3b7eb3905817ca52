"""/api/v1/auth: log in and out, who am I, change my password, my API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Response

from loa.control_plane import users
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, Source, actor, public, self_service
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.sessions import login, logout

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=PROBLEM_RESPONSES)


@router.post("/login", response_model=m.LoginResponse, **public())
def post_login(body: m.LoginRequest, cp: CP, source: Source) -> m.LoginResponse:
    """Exchange a username and password for a session token. Repeated failures lock the username and the
    source address out for a growing time (429 with Retry-After)."""
    session = login(cp, body.username, body.password, source=source)
    return m.LoginResponse(token=session.token, expires_at=session.expires_at, user=m.User.of(session.user))


@router.post("/logout", status_code=204, response_class=Response, **self_service())
def post_logout(cp: CP, caller: Caller, source: Source) -> Response:
    """Revoke the token this request carries."""
    logout(cp, caller, source=source)
    return Response(status_code=204)


@router.get("/me", response_model=m.User, **self_service())
def get_me(cp: CP, caller: Caller) -> m.User:
    with cp.db.read() as conn:
        return m.User.of(users.get_user(conn, caller.username))


@router.post("/password", status_code=204, response_class=Response, **self_service())
def post_password(body: m.PasswordChange, cp: CP, caller: Caller, source: Source) -> Response:
    """Change my password; every other token of mine is revoked."""
    with cp.db.write() as tx:
        users.change_password(tx, caller, cp.passwords, current=body.current, new=body.new, source=source)
    return Response(status_code=204)


@router.get("/tokens", response_model=list[m.Token], **self_service())
def get_tokens(cp: CP, caller: Caller) -> list[m.Token]:
    """My live API tokens."""
    with cp.db.read() as conn:
        return [m.Token.of(t) for t in users.list_tokens(conn, caller.user_id, now=cp.db.clock())]


@router.post("/tokens", status_code=201, response_model=m.TokenCreated, **self_service())
def post_token(body: m.TokenCreate, cp: CP, caller: Caller, source: Source) -> m.TokenCreated:
    """A new API token for scripts, with my rights; the token is shown only in this response."""
    ttl = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    with cp.db.write() as tx:
        user = users.get_user(tx.conn, caller.username)
        token, record = users.issue_token(tx, user, kind="api", name=body.name, ttl=ttl,
                                          actor=actor(caller, source))
    return m.TokenCreated(token=token, **m.Token.of(record).model_dump())


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response, **self_service())
def delete_token(token_id: Annotated[int, Path(ge=1, le=2**62)], cp: CP, caller: Caller, source: Source) -> Response:
    with cp.db.write() as tx:
        users.revoke_token(tx, actor(caller, source), caller.user_id, token_id)
    return Response(status_code=204)
