"""Signed alerts at the server (PROTOCOL.md sections 6.3-6.5): accept an authority's signed body, or sign one.

The streamer never plays an emergency without an authority's Ed25519 signature that devices can check
themselves. An alert arrives either already signed (``body``, ``sig`` from the approving control plane), and is
checked here against the configured authority keys before anything is sent, or is signed here with an
authority's private key the operator configured for a lab (:func:`sign_new_alert`).

Failure semantics: every function raises :class:`AlertError` (a ``ValueError``) with a one-line reason and has
no effect: unknown authority, bad signature, expired, already used id, malformed body.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from bisect import bisect_left
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.protocol.alert import (
    Alert,
    AlertCancel,
    PublicKey,
    decode_alert,
    key_id,
    sign_alert,
    sign_cancel,
    verify_alert,
    verify_cancel,
)
from loa.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["AlertError", "AlertRecord", "AlertTargets", "check_signed_alert", "check_signed_cancel", "sign_new_alert",
           "sign_new_cancel"]


class AlertError(ValueError):
    """An alert or cancel the streamer refuses to send."""


class AlertTargets:
    """The devices told of one alert, kept as long as the alert is valid (an hour by default) to tell them its end
    and to repeat it to those that come back: a sorted tuple of their keys and a set of the few told later.

    An alert to a province names about 10,000 devices, and several alerts may be valid at once. A set of 10,000
    keys takes 512 KiB (a table of 32,768 slots of 16 bytes); the tuple takes 8 bytes a key (80 KiB), and the keys
    themselves are the registry's objects. Membership is a binary search; iteration is in sorted order.
    """

    __slots__ = ("_added", "_sorted")

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        self._sorted: tuple[bytes, ...] = tuple(key for key, _ in itertools.groupby(sorted(keys)))  # no repeats
        self._added: set[bytes] | None = None  # told after the first update, until there are enough to merge

    def update(self, keys: Iterable[bytes]) -> None:
        """Add ``keys`` (duplicates and keys already here are ignored)."""
        new = {key for key in keys if key not in self}
        if not new:
            return
        if not self._sorted:
            self._sorted = tuple(sorted(new))
            return
        added = self._added
        if added is None:
            self._added = added = set()
        added |= new
        if len(added) > max(32, len(self._sorted) // 64):  # a small set costs 30-60 bytes a key
            self._sorted = tuple(heapq.merge(self._sorted, sorted(added)))
            self._added = None

    def __contains__(self, key: object) -> bool:
        keys = self._sorted
        if isinstance(key, bytes):
            i = bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                return True
        return self._added is not None and key in self._added

    def __iter__(self) -> Iterator[bytes]:
        if self._added is None:
            return iter(self._sorted)
        return heapq.merge(self._sorted, sorted(self._added))

    def __len__(self) -> int:
        return len(self._sorted) + (len(self._added) if self._added is not None else 0)

    def __repr__(self) -> str:
        return f"AlertTargets({len(self)} devices)"


@dataclass(slots=True)
class AlertRecord:
    """An alert the streamer sent: its signed form, who was told, and when it stops."""

    alert: Alert
    body: bytes
    sig: bytes
    preroll_ms: int
    expires_at: float  # on the core's monotonic clock
    announced_at: float  # likewise: when its beacon went, before anything else of it
    targets: AlertTargets = field(default_factory=AlertTargets)  # devices sent the alert (speakers and boards)
    cancel: tuple[bytes, bytes] | None = None
    ended: bool = False


def check_signed_alert(body: bytes, sig: bytes, authorities: Mapping[bytes, PublicKey], *, now_ns: int,
                       used: Container[tuple[bytes, str]]) -> Alert:
    """Verify a signed alert as a device would (signature, expiry, id not used before); its zones are not
    checked here (the caller maps them onto its zone tree)."""
    try:
        alert = verify_alert(body, sig, authorities, now=now_ns, zone_path=_all_zones(body), seen_ids=used)
    except RemoteProtocolError as exc:
        raise AlertError(f"alert refused ({type(exc).__name__}): {exc}") from None
    return alert


def _all_zones(body: bytes) -> Sequence[str]:
    try:
        return decode_alert(body).zones
    except RemoteProtocolError:
        return ()


def sign_new_alert(key: Ed25519PrivateKey, *, bid: int, zones: Sequence[str], issued_ns: int, expires_ns: int,
                   cls: int = 2, lvl: int = 2, status: str = "actual", alert_id: str | None = None,
                   text: str | None = None) -> tuple[Alert, bytes, bytes]:
    """Build and sign an alert with an authority's private key; returns ``(alert, body, sig)``."""
    alert = Alert(id=alert_id or f"loa-{secrets.token_hex(8)}", kid=key_id(key.public_key()), status=status,
                  cls=cls, lvl=lvl, zones=tuple(zones), issued=issued_ns, expires=expires_ns, bid=bid, text=text)
    try:
        body, sig = sign_alert(alert, key)
    except LocalProtocolError as exc:
        raise AlertError(f"cannot sign the alert: {exc}") from None
    return alert, body, sig


def check_signed_cancel(body: bytes, sig: bytes, authorities: Mapping[bytes, PublicKey], alert: Alert, *,
                        now_ns: int) -> AlertCancel:
    """Verify a signed cancel and that it names ``alert`` of the same authority."""
    try:
        cancel = verify_cancel(body, sig, authorities, now=now_ns)
    except RemoteProtocolError as exc:
        raise AlertError(f"cancel refused ({type(exc).__name__}): {exc}") from None
    if cancel.kid != alert.kid or cancel.cancel != alert.id:
        raise AlertError(f"the cancel names alert {cancel.cancel!r}, not {alert.id!r} of the same authority")
    return cancel


def sign_new_cancel(key: Ed25519PrivateKey, alert: Alert, *, issued_ns: int) -> tuple[bytes, bytes]:
    """Sign a cancel of ``alert``; the key must be the alert's authority."""
    if key_id(key.public_key()) != alert.kid:
        raise AlertError("only the authority that signed an alert can cancel it")
    try:
        return sign_cancel(AlertCancel(kid=alert.kid, cancel=alert.id, issued=issued_ns), key)
    except LocalProtocolError as exc:
        raise AlertError(f"cannot sign the cancel: {exc}") from None
