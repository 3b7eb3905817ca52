"""One-time enrolment tokens (PROTOCOL.md section 4.5): issue, list, revoke, and redeem by a device's ``hello``.

An operator issues a token bound to a zone (and optionally a device kind) with an expiry; an installer enters it
into the device, which presents it on its first session. Tokens are 16 characters of an unambiguous base32
alphabet (80 bits of randomness), shown once as ``XXXX-XXXX-XXXX-XXXX`` and stored only as SHA-256; what an
installer types is normalised (case, dashes, spaces) before it is compared. A token enrols at most one device.

Failure semantics: every function validates first and raises :class:`InvalidError`, :class:`NotFoundError` or
:class:`ConflictError` with nothing written; changes are audited in the caller's transaction.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from loa.control_plane import audit, zones
from loa.control_plane.auth import Actor
from loa.control_plane.db import Tx
from loa.control_plane.db.schema import devices, enrolment_tokens
from loa.control_plane.devices import DeviceRecord, check_kind, check_name, get
from loa.control_plane.devices import add as add_device
from loa.control_plane.errors import ConflictError, InvalidError, NotFoundError

__all__ = [
    "EnrolmentToken",
    "create_token",
    "enrolment_open",
    "get_token",
    "list_tokens",
    "normalise_token",
    "redeem_token",
    "revoke_token",
]

TOKEN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # noqa: S105 (an alphabet) no 0/O, 1/I: typed by installers
TOKEN_LENGTH = 16
MAX_TOKEN_TTL = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class EnrolmentToken:
    id: int
    hint: str
    zone: str
    kind: str | None
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    revoked_at: datetime | None
    device_id: str | None



def normalise_token(token: str) -> str:
    """What an installer typed, as the token itself: upper case, separators and spaces removed."""
    return "".join(c for c in token.upper() if c.isalnum())


def _digest(token: str) -> bytes:
    return hashlib.sha256(normalise_token(token).encode("ascii", "replace")).digest()


def _token(row: Any) -> EnrolmentToken:
    return EnrolmentToken(row.id, row.hint, row.zone, row.kind, row.name, row.created_by, row.created_at,
                          row.expires_at, row.redeemed_at, row.revoked_at, row.device_id)


def create_token(tx: Tx, actor: Actor, *, zone: str, ttl: timedelta, kind: str | None = None,
                 name: str = "") -> tuple[str, EnrolmentToken]:
    """Issue a one-time token for enrolling one device into ``zone``; returns (token as shown once, record)."""
    zones.get(tx.conn, zone)
    if not timedelta(minutes=1) <= ttl <= MAX_TOKEN_TTL:
        raise InvalidError(f"a token lives from 1 minute to {MAX_TOKEN_TTL.days} days")
    if kind is not None:
        check_kind(kind)
    raw = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
    shown = "-".join(raw[i:i + 4] for i in range(0, TOKEN_LENGTH, 4))
    result = tx.conn.execute(insert(enrolment_tokens).values(
        token_hash=_digest(raw), hint=raw[:4], zone=zone, kind=kind, name=check_name(name),
        created_by=actor.name, created_at=tx.now, expires_at=tx.now + ttl))
    token_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    record = _token(tx.conn.execute(select(enrolment_tokens).where(enrolment_tokens.c.id == token_id)).one())
    audit.record(tx, actor=actor.name, source=actor.source, action="enrolment_token.create", target=str(record.id),
                 details={"zone": zone, "kind": kind, "hint": record.hint, "expires_at": audit.format_time(
                     record.expires_at)})
    return shown, record


def get_token(conn: Connection, token_id: int) -> EnrolmentToken:
    row = conn.execute(select(enrolment_tokens).where(enrolment_tokens.c.id == token_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"no enrolment token {token_id}")
    return _token(row)


def list_tokens(conn: Connection, *, within: str | None = None, active_at: datetime | None = None,
                after: int | None = None, limit: int = 100) -> list[EnrolmentToken]:
    """Tokens by id; ``active_at``: only those unredeemed, unrevoked and unexpired at that time."""
    query = select(enrolment_tokens).order_by(enrolment_tokens.c.id).limit(limit)
    if within is not None:
        query = query.where(enrolment_tokens.c.zone.in_(zones.subtree_codes(within)))
    if active_at is not None:
        query = query.where(enrolment_tokens.c.redeemed_at.is_(None), enrolment_tokens.c.revoked_at.is_(None),
                            enrolment_tokens.c.expires_at > active_at)
    if after is not None:
        query = query.where(enrolment_tokens.c.id > after)
    return [_token(r) for r in conn.execute(query)]


def enrolment_open(conn: Connection, now: datetime) -> bool:
    """True while any token is usable: only then may the server accept handshakes from unknown keys (3.2)."""
    query = select(enrolment_tokens.c.id).where(
        enrolment_tokens.c.redeemed_at.is_(None), enrolment_tokens.c.revoked_at.is_(None),
        enrolment_tokens.c.expires_at > now).limit(1)
    return conn.execute(query).first() is not None


def revoke_token(tx: Tx, actor: Actor, token_id: int) -> EnrolmentToken:
    token = get_token(tx.conn, token_id)
    if token.redeemed_at is not None:
        raise ConflictError(f"enrolment token {token_id} was already used (device {token.device_id})")
    if token.revoked_at is None:
        tx.conn.execute(update(enrolment_tokens).where(enrolment_tokens.c.id == token_id).values(revoked_at=tx.now))
        audit.record(tx, actor=actor.name, source=actor.source, action="enrolment_token.revoke",
                     target=str(token_id), details={"zone": token.zone, "hint": token.hint})
    return get_token(tx.conn, token_id)


def redeem_token(tx: Tx, token: str, *, public_key: bytes, kind: str, model: str | None = None,
                 firmware: str | None = None, source: str | None = None) -> DeviceRecord:
    """Enrol the key of a provisional session that presented ``token`` in its ``hello`` (PROTOCOL.md 4.5).

    Raises :class:`InvalidError` for an unknown, used, revoked or expired token, or one issued for the other kind of
    device (the same message for all: the device learns nothing), :class:`ConflictError` for a known key.
    """
    row = tx.conn.execute(select(enrolment_tokens).where(enrolment_tokens.c.token_hash == _digest(token))
                          .with_for_update()).one_or_none()
    if (row is None or row.redeemed_at is not None or row.revoked_at is not None or row.expires_at <= tx.now
            or (row.kind is not None and row.kind != kind)):
        raise InvalidError("enrolment refused: the token is unknown, used, revoked or expired")
    record = add_device(tx, public_key, kind=check_kind(kind), zone=row.zone, name=row.name,
                        by=f"token:{row.id}")
    fields = {k: v[:64] for k, v in (("model", model), ("firmware", firmware)) if v}
    if fields:
        tx.conn.execute(update(devices).where(devices.c.id == record.id).values(**fields))
    tx.conn.execute(update(enrolment_tokens).where(enrolment_tokens.c.id == row.id)
                    .values(redeemed_at=tx.now, device_id=record.id))
    audit.record(tx, actor=f"device:{record.id}", source=source, action="device.enrol_token", target=record.id,
                 details={"token": row.id, "zone": row.zone, "kind": kind,
                          "public_key": base64.b64encode(public_key).decode()})
    return get(tx.conn, record.id)
