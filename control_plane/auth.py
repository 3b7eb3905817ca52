"""Who may do what, where: roles, the permission table, zone scope, password hashing and bearer tokens.

A user has one role and one scope: a zone code, or ``None`` for national scope. The role says which *actions*
the user may take (:data:`PERMISSIONS`); the scope says where: only on objects in the scope zone's subtree.
Objects that belong to no zone (the audit log, root zones, unassigned devices) are national: only users with
national scope may act on them. Every API route names its action and checks the scope of the objects it
touches with :func:`require_zone`.

Passwords are hashed with Argon2id (argon2-cffi; RFC 9106 parameters by default). Bearer tokens are 256-bit
random strings; only their SHA-256 is stored, so a database leak reveals no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import argon2
from sqlalchemy import Connection

from loa.control_plane.db.schema import ROLES
from loa.control_plane.errors import ForbiddenError

__all__ = [
    "ACTIONS",
    "PERMISSIONS",
    "ROLES",
    "Actor",
    "Passwords",
    "Principal",
    "can",
    "in_scope",
    "new_token",
    "require",
    "require_national",
    "require_zone",
    "token_digest",
]

# Actions, by the objects they touch. "public" (no login) and "self" (any logged-in user, on their own account)
# are route markers, not grantable actions.
ACTIONS = frozenset({
    "zones.read", "zones.write",
    "devices.read", "devices.enrol", "devices.manage",
    "users.read", "users.write",
    "audit.read",
    "events.read",
    "library.read", "library.write", "library.approve",
    "schedule.read", "schedule.write",
    "alerts.read", "alerts.write", "alerts.trigger", "authority.read",
    "reports.read",
    "broadcasts.read", "broadcasts.live",
})
PUBLIC, SELF = "public", "self"

_READ = frozenset({"zones.read", "devices.read", "events.read"})
_CONTENT = frozenset({"library.read", "schedule.read"})  # the library and the schedule, read only
_WATCH = frozenset({"alerts.read", "reports.read", "broadcasts.read"})  # alerts, broadcasts, reports of one's area
_ALERTING = frozenset({"alerts.write", "alerts.trigger", "authority.read"})  # compose, trigger, confirm, cancel
PERMISSIONS: Mapping[str, frozenset[str]] = {
    "admin": ACTIONS,
    "noc": _READ | _CONTENT | _WATCH | _ALERTING | {  # provincial operations centre: runs the fleet, alerts
        "devices.enrol", "devices.manage", "library.write", "library.approve", "schedule.write", "broadcasts.live"},
    "editor": _READ | _CONTENT | _WATCH | {"library.write"},        # writes, edits and submits library items
    "approver": _READ | _CONTENT | _WATCH | {"library.approve"},    # approves or rejects items
    "scheduler": _READ | _CONTENT | _WATCH | {"schedule.write", "broadcasts.live"},  # schedules; goes live
    "viewer": _READ | _CONTENT | _WATCH,
    "vendor": _READ | {"devices.enrol"},                   # installers: enrol devices in their area
}
assert set(PERMISSIONS) == set(ROLES)
assert all(actions <= ACTIONS for actions in PERMISSIONS.values())


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does something, for the audit log: a username (or ``system``) and the source address."""

    name: str
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as resolved from a bearer token."""

    user_id: int
    username: str
    role: str
    scope: str | None
    token_id: int
    token_kind: str
    must_change_password: bool = False

    def actor(self, source: str | None) -> Actor:
        return Actor(self.username, source)


def can(principal: Principal, action: str) -> bool:
    return action in PERMISSIONS.get(principal.role, frozenset())


def require(principal: Principal, action: str) -> None:
    """Raise :class:`ForbiddenError` unless the principal's role grants ``action``."""
    if not can(principal, action):
        raise ForbiddenError(f"the {principal.role} role may not do {action}")


def in_scope(conn: Connection, principal: Principal, zone: str | None) -> bool:
    """True if ``zone`` lies in the principal's scope subtree (national scope covers everything, even None)."""
    if principal.scope is None:
        return True
    if zone is None:
        return False
    from loa.control_plane.zones import ancestors

    return principal.scope in ancestors(conn, zone)


def require_zone(conn: Connection, principal: Principal, zone: str | None) -> None:
    """Raise :class:`ForbiddenError` unless ``zone`` is in the principal's scope."""
    if not in_scope(conn, principal, zone):
        where = f"zone {zone!r}" if zone is not None else "objects outside every zone"
        raise ForbiddenError(f"{where} is outside your scope ({principal.scope})")


def require_national(principal: Principal) -> None:
    if principal.scope is not None:
        raise ForbiddenError(f"this needs national scope; yours is {principal.scope}")


class Passwords:
    """Argon2id hashing; ``fast()`` gives cheap parameters for tests only."""

    MIN_LENGTH = 10
    MAX_LENGTH = 1024

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65_536, parallelism: int = 4) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                             type=argon2.Type.ID)
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def fast(cls) -> Passwords:
        return cls(time_cost=1, memory_kib=256, parallelism=1)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, digest: str | None, password: str) -> bool:
        """Constant work whether or not the user exists (pass ``None`` for an unknown user)."""
        try:
            return self._hasher.verify(digest if digest is not None else self._dummy, password) and digest is not None
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def needs_rehash(self, digest: str) -> bool:
        return self._hasher.check_needs_rehash(digest)

    @staticmethod
    def generate() -> str:
        """A random password to show once (about 96 bits)."""
        return secrets.token_urlsafe(12)


def new_token() -> str:
    """A bearer token: ``loa_`` and 256 random bits, URL-safe base64."""
    return "loa_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
