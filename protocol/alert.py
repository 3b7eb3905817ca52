"""Signed alerts and cancels (spec sections 6.4-6.5): canonical bodies, Ed25519 signing and verification.

The authority signs ``"loa-alert/1" ‖ 0x00 ‖ body`` (cancels: ``"loa-alert-cancel/1" ‖ 0x00 ‖ body``) with pure
Ed25519 (RFC 8032) through ``cryptography``. ``kid`` is the first 8 bytes of BLAKE2s-256 of the authority's
32-byte public key. The signer writes the canonical msgpack body (keys sorted by UTF-8 bytes, shortest
integers); the verifier checks the bytes as received.

:func:`verify_alert` checks, in this order, raising the first failure:

0. the body is one msgpack map (:class:`OversizeError`, :class:`MalformedError`), ``v`` is 1
   (:class:`UnknownVersionError`), every field is present and valid (:class:`FieldError`);
1. ``kid`` names a trusted key (:class:`UnknownKeyError`);
2. the signature verifies (:class:`SignatureError`);
3. ``expires > now`` and ``issued <= now + 30 s`` (:class:`ExpiredError`);
4. one of ``zones`` is on the device's zone path (:class:`WrongZoneError`);
5. ``(kid, id)`` was not accepted or cancelled before (:class:`ReplayError`: acknowledge, do not play).

:func:`verify_cancel` checks 0-2 and ``issued <= now + 30 s``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loa.protocol._schema import (
    I64_MAX,
    I64_MIN,
    MAX_MESSAGE,
    U32_MAX,
    Field,
    Kind,
    NotAbove,
    Record,
    pack,
    read_record,
    unpack_map,
    write_record,
)
from loa.protocol.errors import (
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    ReplayError,
    SignatureError,
    UnknownKeyError,
    UnknownVersionError,
    WrongZoneError,
)

__all__ = [
    "ALERT_CONTEXT",
    "CANCEL_CONTEXT",
    "CLOCK_SKEW_NS",
    "Alert",
    "AlertCancel",
    "PublicKey",
    "decode_alert",
    "decode_cancel",
    "encode_alert",
    "encode_cancel",
    "key_id",
    "should_play",
    "sign_alert",
    "sign_cancel",
    "verify_alert",
    "verify_cancel",
]

ALERT_CONTEXT = b"loa-alert/1\x00"
CANCEL_CONTEXT = b"loa-alert-cancel/1\x00"
CLOCK_SKEW_NS = 30_000_000_000
STATUSES = ("actual", "exercise", "test")

PublicKey = Ed25519PublicKey | bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    id: str
    kid: bytes
    status: str
    cls: int
    lvl: int
    zones: tuple[str, ...]
    issued: int
    expires: int
    bid: int
    text: str | None = None
    v: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertCancel:
    kid: bytes
    cancel: str
    issued: int
    v: int = 1


_V = Field(Kind.UINT, 1, 1)
_KID = Field(Kind.BIN, 8, 8)
_TIME = Field(Kind.INT, I64_MIN, I64_MAX)
_ALERT_ID = Field(Kind.STR, 1, 64)

_ALERT = Record(
    "alert",
    {
        "v": _V,
        "id": _ALERT_ID,
        "kid": _KID,
        "status": Field(Kind.STR, choices=STATUSES),
        "cls": Field(Kind.UINT, 0, 2),
        "lvl": Field(Kind.UINT, 0, 3),
        "zones": Field(Kind.ARRAY, 1, 64, items=Field(Kind.STR, 1, 64)),
        "issued": _TIME,
        "expires": _TIME,
        "bid": Field(Kind.UINT, 0, U32_MAX),
        "text": Field(Kind.STR, 0, 512, optional=True),
    },
    Alert,
    (NotAbove("issued", "expires", strict=True),),
)
_CANCEL = Record("alert cancel", {"v": _V, "kid": _KID, "cancel": _ALERT_ID, "issued": _TIME}, AlertCancel)


def key_id(public_key: PublicKey) -> bytes:
    """``kid``: the first 8 bytes of BLAKE2s-256 of the 32-byte public key."""
    return hashlib.blake2s(_raw(public_key)).digest()[:8]


def _raw(public_key: PublicKey) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if len(public_key) != 32:
        raise LocalProtocolError("an Ed25519 public key is 32 bytes")
    return bytes(public_key)


def _public(public_key: PublicKey) -> Ed25519PublicKey:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key
    try:
        return Ed25519PublicKey.from_public_bytes(_raw(public_key))
    except ValueError as exc:
        raise LocalProtocolError(f"not an Ed25519 public key: {exc}") from exc


def _encode(record: Record, value: object) -> bytes:
    wire = write_record(record, value)
    try:
        read_record(record, wire, record.name)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"invalid {record.name}: {exc}") from exc
    return pack(wire)


def _decode(record: Record, body: bytes) -> Any:
    fields = unpack_map(body, max_size=MAX_MESSAGE)
    version = fields.get("v")
    if type(version) is int and version != 1:
        raise UnknownVersionError(f"{record.name} version {version}")
    return read_record(record, fields, record.name)


def encode_alert(alert: Alert) -> bytes:
    """The canonical body of ``alert``; :class:`LocalProtocolError` if a field is out of range."""
    return _encode(_ALERT, alert)


def encode_cancel(cancel: AlertCancel) -> bytes:
    """The canonical body of ``cancel``; :class:`LocalProtocolError` if a field is out of range."""
    return _encode(_CANCEL, cancel)


def decode_alert(body: bytes) -> Alert:
    """Parse an alert body without verifying it (step 0 of :func:`verify_alert`)."""
    alert: Alert = _decode(_ALERT, body)
    return alert


def decode_cancel(body: bytes) -> AlertCancel:
    """Parse a cancel body without verifying it (step 0 of :func:`verify_cancel`)."""
    cancel: AlertCancel = _decode(_CANCEL, body)
    return cancel


def _sign(context: bytes, body: bytes, kid: bytes, private_key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    if kid != key_id(private_key.public_key()):
        raise LocalProtocolError("kid is not the key id of the signing key")
    return body, private_key.sign(context + body)


def sign_alert(alert: Alert, private_key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """``(body, sig)`` for an ``alert`` message. Raises :class:`LocalProtocolError` for a bad alert or a
    ``kid`` that is not the signing key's."""
    return _sign(ALERT_CONTEXT, encode_alert(alert), alert.kid, private_key)


def sign_cancel(cancel: AlertCancel, private_key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """``(body, sig)`` for an ``alert_cancel`` message (see :func:`sign_alert`)."""
    return _sign(CANCEL_CONTEXT, encode_cancel(cancel), cancel.kid, private_key)


def _check_signature(
    context: bytes, body: bytes, sig: bytes, kid: bytes, trusted_keys: Mapping[bytes, PublicKey]
) -> None:
    key = trusted_keys.get(kid)
    if key is None:
        raise UnknownKeyError(f"no trusted authority key with kid {kid.hex()}")
    if len(sig) != 64:
        raise SignatureError(f"signature of {len(sig)} bytes, not 64")
    try:
        _public(key).verify(sig, context + body)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def verify_alert(
    body: bytes,
    sig: bytes,
    trusted_keys: Mapping[bytes, PublicKey],
    *,
    now: int,
    zone_path: Sequence[str],
    seen_ids: Container[tuple[bytes, str]],
) -> Alert:
    """Verify an ``alert`` (steps in the module docstring) at server time ``now`` (ns, the device's estimate).

    ``zone_path`` is the device's ``config`` ``zones``; ``seen_ids`` holds ``(kid, id)`` of alerts accepted or
    cancelled and not yet expired. Nothing is remembered here: on success the caller adds ``(kid, id)``.
    """
    alert = decode_alert(body)
    _check_signature(ALERT_CONTEXT, body, sig, alert.kid, trusted_keys)
    if alert.expires <= now:
        raise ExpiredError(f"alert {alert.id!r} expired")
    if alert.issued > now + CLOCK_SKEW_NS:
        raise ExpiredError(f"alert {alert.id!r} issued more than 30 s in the future")
    if not set(alert.zones).intersection(zone_path):
        raise WrongZoneError(f"alert {alert.id!r} targets none of this device's zones")
    if (alert.kid, alert.id) in seen_ids:
        raise ReplayError(f"alert {alert.id!r} already accepted or cancelled")
    return alert


def verify_cancel(body: bytes, sig: bytes, trusted_keys: Mapping[bytes, PublicKey], *, now: int) -> AlertCancel:
    """Verify an ``alert_cancel``; it applies to the alert ``(kid, cancel)`` of the same authority."""
    cancel = decode_cancel(body)
    _check_signature(CANCEL_CONTEXT, body, sig, cancel.kid, trusted_keys)
    if cancel.issued > now + CLOCK_SKEW_NS:
        raise ExpiredError(f"cancel of {cancel.cancel!r} issued more than 30 s in the future")
    return cancel


def should_play(alert: Alert, exercise: bool) -> bool:
    """Step 6: an ``exercise`` or ``test`` alert plays only where ``config`` ``exercise`` is true."""
    return alert.status == "actual" or exercise
