"""SRTP and SRTCP (RFC 3711) with AES_CM_128_HMAC_SHA1_80, on libsrtp through pylibsrtp.

A stream's 30-byte key is the 16-byte master key followed by the 14-byte master salt (the ``key`` of
``join``/``rotate``, and the ``inline:`` value of an SDP ``a=crypto`` line). The same key protects the stream
for every member: :class:`StreamProtector` protects each packet once, and the caller sends those bytes to every
member and keeps them for retransmission (section 5.5) instead of protecting again.

Failure semantics: no exception of pylibsrtp escapes. :class:`StreamUnprotector` raises only
:class:`~loa.protocol.errors.RemoteProtocolError` subclasses for any input bytes: ``AuthError`` when the tag does
not verify, ``ReplayError`` for a packet index already received or behind the replay window (128 packets),
``UnknownKeyError`` for an SSRC other than the one the unprotector was made for, ``TruncatedError``,
``MalformedError`` or ``OversizeError`` for bytes that are not SRTP/SRTCP at all. A packet that fails leaves
the receiver's state (replay window, rollover counter) unchanged. :class:`StreamProtector` raises
:class:`~loa.protocol.errors.LocalProtocolError` when asked to protect a sequence number a second time or a
packet that is not RTP/RTCP.
"""

from __future__ import annotations

import pylibsrtp

from loa.protocol.errors import (
    AuthError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
    RemoteProtocolError,
    ReplayError,
    TruncatedError,
    UnknownKeyError,
)

__all__ = [
    "SRTCP_TRAILER_SIZE",
    "SRTP_KEY_SIZE",
    "SRTP_SUITE",
    "SRTP_TAG_SIZE",
    "StreamProtector",
    "StreamUnprotector",
    "split_key",
]

SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_KEY_SIZE = 30
SRTP_TAG_SIZE = 10
SRTCP_TRAILER_SIZE = 4 + SRTP_TAG_SIZE  # E flag + 31-bit SRTCP index, then the tag
MAX_DATAGRAM = 1200
_REPLAY = ("replay check failed (bad index)", "replay check failed (index too old)", "packet index is too old")


def split_key(key: bytes) -> tuple[bytes, bytes]:
    """Split a 30-byte stream key into (master key 16, master salt 14). Raises LocalProtocolError otherwise."""
    if len(key) != SRTP_KEY_SIZE:
        raise LocalProtocolError(f"SRTP key must be {SRTP_KEY_SIZE} bytes, got {len(key)}")
    return bytes(key[:16]), bytes(key[16:])


def _policy(key: bytes, ssrc_type: int, ssrc: int = 0) -> pylibsrtp.Policy:
    split_key(key)
    policy = pylibsrtp.Policy(key=bytes(key), ssrc_type=ssrc_type, ssrc_value=ssrc)
    policy.allow_repeat_tx = False
    return policy


def _check_rtp_like(data: bytes | bytearray | memoryview, minimum: int, what: str) -> None:
    if len(data) > MAX_DATAGRAM:
        raise OversizeError(f"{what} packet of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    if len(data) < minimum:
        raise TruncatedError(f"{what} packet needs at least {minimum} bytes, got {len(data)}")
    if data[0] >> 6 != 2:
        raise MalformedError(f"{what} version {data[0] >> 6} is not 2")


def _check_outgoing(data: bytes | bytearray | memoryview, minimum: int, trailer: int, what: str) -> None:
    if len(data) + trailer > MAX_DATAGRAM or len(data) < minimum or data[0] >> 6 != 2:
        raise LocalProtocolError(f"not a version-2 {what} packet of {minimum}..{MAX_DATAGRAM - trailer} bytes")


def _remote_error(exc: Exception) -> RemoteProtocolError:
    text = str(exc)
    if text == "authentication failure":
        return AuthError("SRTP authentication tag does not verify")
    if text.startswith(_REPLAY):
        return ReplayError(f"SRTP replay: {text}")
    if text == "no appropriate context found":
        return UnknownKeyError("SRTP packet for an SSRC this receiver has no key for")
    return MalformedError(f"not a valid SRTP packet: {text}")


class StreamProtector:
    """The sending side of SRTP streams under one group key (any SSRC the sender uses with that key).

    Protect every packet exactly once: protecting the same sequence number (or SRTCP packet) again would
    reuse keystream, and libsrtp refuses it; this raises :class:`LocalProtocolError` instead.
    """

    __slots__ = ("_session",)

    def __init__(self, key: bytes) -> None:
        """Raises :class:`LocalProtocolError` if ``key`` is not 30 bytes."""
        self._session = pylibsrtp.Session(_policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))

    def protect(self, rtp: bytes | bytearray | memoryview) -> bytes:
        """RTP -> SRTP (10 bytes longer)."""
        _check_outgoing(rtp, 12, SRTP_TAG_SIZE, "RTP")
        try:
            return self._session.protect(bytes(rtp))
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise LocalProtocolError(f"SRTP protect refused: {exc}") from None

    def protect_rtcp(self, rtcp: bytes | bytearray | memoryview) -> bytes:
        """RTCP -> SRTCP (14 bytes longer: encrypted, with E flag, index and tag)."""
        _check_outgoing(rtcp, 8, SRTCP_TRAILER_SIZE, "RTCP")
        try:
            return self._session.protect_rtcp(bytes(rtcp))
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise LocalProtocolError(f"SRTCP protect refused: {exc}") from None


class StreamUnprotector:
    """The receiving side: verifies, decrypts and replay-checks SRTP and SRTCP under one key.

    With ``ssrc`` given, only that SSRC is accepted (others raise ``UnknownKeyError``); without it, any SSRC
    protected with the key is accepted and tracked separately (rollover counter and replay window per SSRC).
    """

    __slots__ = ("_session",)

    def __init__(self, key: bytes, *, ssrc: int | None = None) -> None:
        """Raises :class:`LocalProtocolError` if ``key`` is not 30 bytes or ``ssrc`` is not 32-bit."""
        if ssrc is None:
            policy = _policy(key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        elif 0 <= ssrc <= 0xFFFFFFFF:
            policy = _policy(key, pylibsrtp.Policy.SSRC_SPECIFIC, ssrc)
        else:
            raise LocalProtocolError(f"SSRC {ssrc} is not 32-bit")
        self._session = pylibsrtp.Session(policy)

    def unprotect(self, srtp: bytes | bytearray | memoryview) -> bytes:
        """SRTP -> RTP. Raises a RemoteProtocolError subclass (see the module docstring) on failure."""
        _check_rtp_like(srtp, 12 + SRTP_TAG_SIZE, "SRTP")
        try:
            return self._session.unprotect(bytes(srtp))
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise _remote_error(exc) from None

    def unprotect_rtcp(self, srtcp: bytes | bytearray | memoryview) -> bytes:
        """SRTCP -> RTCP. Raises a RemoteProtocolError subclass (see the module docstring) on failure."""
        _check_rtp_like(srtcp, 8 + SRTCP_TRAILER_SIZE, "SRTCP")
        try:
            return self._session.unprotect_rtcp(bytes(srtcp))
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise _remote_error(exc) from None
