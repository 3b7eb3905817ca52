"""Request dependencies: the control plane, the caller (bearer token), permissions, source address, cursors.

Every route declares one permission with :func:`guard` (or is ``public`` / ``self``); the permission is both
enforced and written into the OpenAPI operation as ``x-loa-permission``, which is what the permission tests
enumerate. A user who must change their password may use only ``self`` routes until they do.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from loa.control_plane import auth, users
from loa.control_plane.auth import Actor, Principal
from loa.control_plane.errors import ForbiddenError, InvalidError, UnauthorizedError
from loa.control_plane.settings import ControlPlane

__all__ = ["CP", "Caller", "Source", "decode_cursor", "encode_cursor", "guard", "public", "self_service"]

PERMISSION_KEY = "x-loa-permission"
_bearer = HTTPBearer(auto_error=False, description="A session token from /api/v1/auth/login or an API token")


def get_cp(request: Request) -> ControlPlane:
    cp = request.app.state.control_plane
    assert isinstance(cp, ControlPlane)
    return cp


def source_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def authenticate(cp: Annotated[ControlPlane, Depends(get_cp)],
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise UnauthorizedError("log in first: send Authorization: Bearer <token>")
    principal = users.resolve_token(cp.db, credentials.credentials)
    if principal is None:
        raise UnauthorizedError("the token is unknown, expired or revoked; log in again")
    return principal


CP = Annotated[ControlPlane, Depends(get_cp)]
Caller = Annotated[Principal, Depends(authenticate)]
Source = Annotated[str | None, Depends(source_address)]


def _require(action: str) -> Any:
    def check(principal: Caller) -> None:
        if principal.must_change_password and action != auth.SELF:
            raise ForbiddenError("change your password first (POST /api/v1/auth/password)",
                                 extra={"reason": "password-change-required"})
        if action != auth.SELF:
            auth.require(principal, action)

    return check


def guard(action: str) -> dict[str, Any]:
    """Route keyword arguments that require ``action`` (a key of the permission table)."""
    assert action in auth.ACTIONS, action
    return {"dependencies": [Depends(_require(action))], "openapi_extra": {PERMISSION_KEY: action}}


def self_service() -> dict[str, Any]:
    """Any logged-in user, acting on their own account (allowed even before a required password change)."""
    return {"dependencies": [Depends(_require(auth.SELF))], "openapi_extra": {PERMISSION_KEY: auth.SELF}}


def public() -> dict[str, Any]:
    return {"openapi_extra": {PERMISSION_KEY: auth.PUBLIC}}


def actor(principal: Principal, source: str | None) -> Actor:
    return Actor(principal.username, source)


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type) -> Any:
    """The key a cursor carries; raises :class:`InvalidError` for one this API did not make."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, kind) or isinstance(key, bool):
        raise InvalidError("cursor: not a cursor this API returned")
    return key
