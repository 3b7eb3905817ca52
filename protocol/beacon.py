"""Alert beacons (spec section 6.4.2): a signed alert sent once, in the clear, ahead of its reliable copies.

An alert is public and carries its own Ed25519 signature, so the server can send every targeted device the same
bytes at once and have each device check them itself, instead of sealing one ``alert`` message per session first.
The datagram (type ``0x05``, server -> device, never encrypted)::

    0   4  header    05 01 00 00
    4   2  body_len  n, 1..1130
    6   n  body      the alert body, byte for byte as signed (section 6.4)
    6+n 64 sig       Ed25519 over "loa-alert/1" || 0x00 || body

:func:`parse_beacon` checks structure only, in this order, and the first failure names the error: longer than
1200 bytes (``OversizeError``); empty (``TruncatedError``); a type other than ``0x05`` (``UnknownTypeError``);
shorter than 6 bytes (``TruncatedError``); ``version`` not 1 (``UnknownVersionError``); ``reserved`` not zero
(``ReservedBitsError``); ``body_len`` zero (``BadLengthError``); shorter than ``70 + body_len``
(``TruncatedError``); bytes after the signature (``BadLengthError``). The body is then
verified as any alert (:func:`loa.protocol.alert.verify_alert`).

:class:`BeaconLimiter` is the device's bound on signature checks of beacons (``BEACON_VERIFY_BURST`` at once,
``BEACON_VERIFY_RATE`` per second after that): a beacon comes from no session, so a flood of forged ones must not
buy an Ed25519 verification each. A beacon over the bound is dropped (``RateLimitError``); the alert still arrives
as the reliable ``alert``.
"""

from __future__ import annotations

import struct
from typing import Final

from loa.protocol.datagram import MAX_DATAGRAM, TYPE_BEACON, VERSION, check_head
from loa.protocol.errors import (
    BadLengthError,
    LocalProtocolError,
    TruncatedError,
)

__all__ = [
    "BEACON_OVERHEAD",
    "BEACON_VERIFY_BURST",
    "BEACON_VERIFY_RATE",
    "MAX_BEACON_BODY",
    "TYPE_BEACON",
    "BeaconLimiter",
    "encode_beacon",
    "parse_beacon",
]

SIG_SIZE: Final = 64
BEACON_OVERHEAD: Final = 6 + SIG_SIZE
MAX_BEACON_BODY: Final = MAX_DATAGRAM - BEACON_OVERHEAD  # 1130
BEACON_VERIFY_BURST: Final = 8
BEACON_VERIFY_RATE: Final = 2.0  # per second

_HEAD = struct.Struct(">BBHH")


def encode_beacon(body: bytes, sig: bytes) -> bytes:
    """The beacon datagram for a signed alert; LocalProtocolError if ``body`` is empty or too long for one
    datagram, or ``sig`` is not 64 bytes (the server then sends only the reliable ``alert``)."""
    if not 1 <= len(body) <= MAX_BEACON_BODY:
        raise LocalProtocolError(f"an alert body of {len(body)} bytes does not fit a beacon (1-{MAX_BEACON_BODY})")
    if len(sig) != SIG_SIZE:
        raise LocalProtocolError(f"an Ed25519 signature is {SIG_SIZE} bytes, not {len(sig)}")
    return _HEAD.pack(TYPE_BEACON, VERSION, 0, len(body)) + bytes(body) + bytes(sig)


def parse_beacon(data: bytes) -> tuple[bytes, bytes]:
    """``(body, sig)`` of a beacon datagram, structure checked as the module says; raises the named error."""
    check_head(data, TYPE_BEACON, "beacon", 6)
    size = len(data)
    body_len = _HEAD.unpack_from(data)[3]
    if body_len == 0:
        raise BadLengthError("beacon with an empty body")
    end = BEACON_OVERHEAD + body_len
    if size < end:
        raise TruncatedError(f"beacon of {size} bytes announces {end}")
    if size > end:
        raise BadLengthError(f"{size - end} bytes after the beacon's signature")
    return bytes(data[6 : 6 + body_len]), bytes(data[6 + body_len : end])


class BeaconLimiter:
    """A token bucket: :meth:`allow` is True for at most ``burst`` checks at once and ``rate`` per second on
    average after that (times are the caller's clock, in seconds)."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, *, burst: int = BEACON_VERIFY_BURST, rate: float = BEACON_VERIFY_RATE) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a beacon limiter needs burst >= 1 and rate > 0")
        self.burst, self.rate = burst, rate
        self._tokens = float(burst)
        self._at: float | None = None

    def allow(self, now: float) -> bool:
        if self._at is not None and now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
