"""Session-layer datagrams (PROTOCOL.md sections 2.2-2.4 and 3.3-3.6): the loa header and types 0x01-0x04.

:func:`parse` turns any bytes into one of the four frozen dataclasses below or raises a
:class:`~loa.protocol.errors.RemoteProtocolError` subclass; it checks structure only (sizes, header), never
cryptography. The checks run in this order, and the first failing one names the error:

1. longer than :data:`MAX_DATAGRAM` (1200) bytes: ``OversizeError``;
2. empty: ``TruncatedError``;
3. first byte not ``0x01``-``0x04``: ``UnknownTypeError``;
4. shorter than the 4-byte header: ``TruncatedError``;
5. ``version`` not 1: ``UnknownVersionError``;
6. ``reserved`` not zero: ``ReservedBitsError``;
7. types 1-3 shorter than their fixed size, or a transport shorter than 32 bytes: ``TruncatedError``;
8. types 1-3 longer than their fixed size: ``BadLengthError``.

``to_bytes()`` raises :class:`~loa.protocol.errors.LocalProtocolError` when a field has the wrong size or range
(the caller built an impossible message); constructing the dataclass checks the same.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from loa.protocol.errors import (
    BadLengthError,
    LocalProtocolError,
    OversizeError,
    ReservedBitsError,
    TruncatedError,
    UnknownTypeError,
    UnknownVersionError,
)

__all__ = [
    "HEADER_SIZE",
    "MAX_DATAGRAM",
    "MAX_PLAINTEXT",
    "TRANSPORT_OVERHEAD",
    "TYPE_COOKIE",
    "TYPE_INIT",
    "TYPE_RESPONSE",
    "TYPE_TRANSPORT",
    "VERSION",
    "CookieReply",
    "Datagram",
    "HandshakeInit",
    "HandshakeResponse",
    "Transport",
    "check_head",
    "classify",
    "is_init",
    "parse",
    "transport_header",
    "transport_index",
]

VERSION: Final = 1
HEADER_SIZE: Final = 4
MAX_DATAGRAM: Final = 1200
TRANSPORT_OVERHEAD: Final = 32
MAX_PLAINTEXT: Final = MAX_DATAGRAM - TRANSPORT_OVERHEAD

TYPE_INIT: Final = 0x01
TYPE_RESPONSE: Final = 0x02
TYPE_COOKIE: Final = 0x03
TYPE_TRANSPORT: Final = 0x04
TYPE_BEACON: Final = 0x05  # alert beacon, server -> device (section 6.4.2, loa.protocol.beacon)
TYPE_NOTICE: Final = 0x06  # restart notice, server -> device (section 3.16, loa.protocol.restart)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _header(kind: int) -> bytes:
    return bytes((kind, VERSION, 0, 0))


def _check_bytes(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise LocalProtocolError(f"{name} must be {size} bytes")


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise LocalProtocolError(f"{name} must be an unsigned {bits}-bit integer")


@dataclass(frozen=True, slots=True)
class HandshakeInit:
    """Type 0x01, device -> server, 148 bytes (section 3.3)."""

    SIZE: ClassVar[int] = 148
    MAC1_OFFSET: ClassVar[int] = 116
    MAC2_OFFSET: ClassVar[int] = 132

    sender_index: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_payload: bytes
    mac1: bytes
    mac2: bytes

    def __post_init__(self) -> None:
        _check_uint("sender_index", self.sender_index, 32)
        _check_bytes("ephemeral", self.ephemeral, 32)
        _check_bytes("encrypted_static", self.encrypted_static, 48)
        _check_bytes("encrypted_payload", self.encrypted_payload, 28)
        _check_bytes("mac1", self.mac1, 16)
        _check_bytes("mac2", self.mac2, 16)

    @property
    def noise_message(self) -> bytes:
        """Bytes 8..116: Noise IK message 1."""
        return self.ephemeral + self.encrypted_static + self.encrypted_payload

    def to_bytes(self) -> bytes:
        return (
            _header(TYPE_INIT)
            + _U32.pack(self.sender_index)
            + self.noise_message
            + self.mac1
            + self.mac2
        )


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """Type 0x02, server -> device, 96 bytes (section 3.4)."""

    SIZE: ClassVar[int] = 96
    MAC1_OFFSET: ClassVar[int] = 64

    sender_index: int
    receiver_index: int
    ephemeral: bytes
    encrypted_payload: bytes
    mac1: bytes
    mac2: bytes

    def __post_init__(self) -> None:
        _check_uint("sender_index", self.sender_index, 32)
        _check_uint("receiver_index", self.receiver_index, 32)
        _check_bytes("ephemeral", self.ephemeral, 32)
        _check_bytes("encrypted_payload", self.encrypted_payload, 20)
        _check_bytes("mac1", self.mac1, 16)
        _check_bytes("mac2", self.mac2, 16)

    @property
    def noise_message(self) -> bytes:
        """Bytes 12..64: Noise IK message 2."""
        return self.ephemeral + self.encrypted_payload

    def to_bytes(self) -> bytes:
        return (
            _header(TYPE_RESPONSE)
            + _U32.pack(self.sender_index)
            + _U32.pack(self.receiver_index)
            + self.noise_message
            + self.mac1
            + self.mac2
        )


@dataclass(frozen=True, slots=True)
class CookieReply:
    """Type 0x03, server -> device, 52 bytes (section 3.5)."""

    SIZE: ClassVar[int] = 52

    receiver_index: int
    nonce: bytes
    encrypted_cookie: bytes

    def __post_init__(self) -> None:
        _check_uint("receiver_index", self.receiver_index, 32)
        _check_bytes("nonce", self.nonce, 12)
        _check_bytes("encrypted_cookie", self.encrypted_cookie, 32)

    def to_bytes(self) -> bytes:
        return _header(TYPE_COOKIE) + _U32.pack(self.receiver_index) + self.nonce + self.encrypted_cookie


@dataclass(frozen=True, slots=True)
class Transport:
    """Type 0x04, both directions, 32 + n bytes (section 3.6); ``ciphertext`` includes the 16-byte tag."""

    MIN_SIZE: ClassVar[int] = TRANSPORT_OVERHEAD

    receiver_index: int
    counter: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        _check_uint("receiver_index", self.receiver_index, 32)
        _check_uint("counter", self.counter, 64)
        if not isinstance(self.ciphertext, bytes) or not 16 <= len(self.ciphertext) <= MAX_PLAINTEXT + 16:
            raise LocalProtocolError("ciphertext must be 16..1184 bytes")

    @property
    def header(self) -> bytes:
        """Bytes 0..16, the associated data of the AEAD."""
        return transport_header(self.receiver_index, self.counter)

    def to_bytes(self) -> bytes:
        return self.header + self.ciphertext


Datagram = HandshakeInit | HandshakeResponse | CookieReply | Transport


def transport_header(receiver_index: int, counter: int) -> bytes:
    """The 16 bytes a transport message starts with (and authenticates as AD)."""
    return _header(TYPE_TRANSPORT) + _U32.pack(receiver_index) + _U64.pack(counter)


_FIXED: Final = {TYPE_INIT: HandshakeInit.SIZE, TYPE_RESPONSE: HandshakeResponse.SIZE, TYPE_COOKIE: CookieReply.SIZE}


_INIT_HEADER: Final = _header(TYPE_INIT)


def is_init(data: bytes) -> bool:
    """True exactly when :func:`parse` returns a HandshakeInit for ``data``: 148 bytes beginning ``01 01 00 00``
    (every field of an init has a fixed size, so nothing else can fail). A server checks an init's mac1 on these
    bytes before it builds anything."""
    return len(data) == HandshakeInit.SIZE and data[:HEADER_SIZE] == _INIT_HEADER


_TRANSPORT_HEADER: Final = _header(TYPE_TRANSPORT)


def transport_index(data: bytes) -> int | None:
    """The ``receiver_index`` of ``data`` when :func:`parse` returns a Transport for it (32 to 1200 bytes beginning
    ``04 01 00 00``), else None. A server looks the index up before it builds anything."""
    if TRANSPORT_OVERHEAD <= len(data) <= MAX_DATAGRAM and data[:HEADER_SIZE] == _TRANSPORT_HEADER:
        return int.from_bytes(data[4:8], "big")
    return None


def parse(data: bytes) -> Datagram:
    """Parse one loa datagram (types 0x01-0x04); raises only RemoteProtocolError subclasses (see module doc)."""
    data = bytes(data)
    size = len(data)
    if size > MAX_DATAGRAM:
        raise OversizeError(f"datagram of {size} bytes exceeds {MAX_DATAGRAM}")
    if size == 0:
        raise TruncatedError("empty datagram")
    kind = data[0]
    if not TYPE_INIT <= kind <= TYPE_TRANSPORT:
        raise UnknownTypeError(f"datagram type 0x{kind:02x}")
    if size < HEADER_SIZE:
        raise TruncatedError("shorter than the 4-byte header")
    if data[1] != VERSION:
        raise UnknownVersionError(f"version {data[1]}")
    if data[2] or data[3]:
        raise ReservedBitsError("reserved header bytes are not zero")
    if kind == TYPE_TRANSPORT:
        if size < TRANSPORT_OVERHEAD:
            raise TruncatedError(f"transport of {size} bytes is shorter than {TRANSPORT_OVERHEAD}")
        return Transport(_U32.unpack_from(data, 4)[0], _U64.unpack_from(data, 8)[0], data[16:])
    expected = _FIXED[kind]
    if size < expected:
        raise TruncatedError(f"type 0x{kind:02x} needs {expected} bytes, got {size}")
    if size > expected:
        raise BadLengthError(f"type 0x{kind:02x} is {expected} bytes, got {size}")
    if kind == TYPE_INIT:
        return HandshakeInit(_U32.unpack_from(data, 4)[0], data[8:40], data[40:88], data[88:116], data[116:132],
                             data[132:148])
    if kind == TYPE_RESPONSE:
        return HandshakeResponse(_U32.unpack_from(data, 4)[0], _U32.unpack_from(data, 8)[0], data[12:44],
                                 data[44:64], data[64:80], data[80:96])
    return CookieReply(_U32.unpack_from(data, 4)[0], data[8:20], data[20:52])


def check_head(data: bytes, kind: int, name: str, head: int) -> None:
    """The structural checks every loa datagram outside types 1-4 begins with, in the spec's order (sections 3.16,
    6.4.2): longer than 1200 bytes (OversizeError); empty (TruncatedError); first byte not ``kind``
    (UnknownTypeError); shorter than its ``head`` bytes (TruncatedError); ``version`` not 1 (UnknownVersionError);
    ``reserved`` not zero (ReservedBitsError). ``name`` names the datagram in the errors."""
    size = len(data)
    if size > MAX_DATAGRAM:
        raise OversizeError(f"datagram of {size} bytes exceeds {MAX_DATAGRAM}")
    if size == 0:
        raise TruncatedError("empty datagram")
    if data[0] != kind:
        raise UnknownTypeError(f"datagram type 0x{data[0]:02x} is not a {name}")
    if size < head:
        raise TruncatedError(f"{name} of {size} bytes is shorter than its {head}-byte head")
    if data[1] != VERSION:
        raise UnknownVersionError(f"{name} version {data[1]}")
    if data[2] or data[3]:
        raise ReservedBitsError(f"{name} reserved bytes are not zero")


def classify(data: bytes) -> Literal["loa", "beacon", "notice", "rtp", "rtcp"]:
    """Demultiplex a datagram by its first byte (section 2.2, RFC 7983 / RFC 5761).

    Raises OversizeError above 1200 bytes, TruncatedError for an empty datagram or a one-byte RTP/RTCP one,
    UnknownTypeError for any first byte outside ``0x01``-``0x06`` and ``0x80``-``0xBF``. ``0x05`` is an alert
    beacon (section 6.4.2, :mod:`loa.protocol.beacon`) and ``0x06`` a restart notice (section 3.16,
    :mod:`loa.protocol.restart`), which only a device accepts. It does not validate the rest of a loa datagram:
    :func:`parse` (types 1-4), :func:`~loa.protocol.beacon.parse_beacon` and
    :func:`~loa.protocol.restart.parse_notice` do.
    """
    size = len(data)
    if size > MAX_DATAGRAM:
        raise OversizeError(f"datagram of {size} bytes exceeds {MAX_DATAGRAM}")
    if size == 0:
        raise TruncatedError("empty datagram")
    first = data[0]
    if TYPE_INIT <= first <= TYPE_TRANSPORT:
        return "loa"
    if first == TYPE_BEACON:
        return "beacon"
    if first == TYPE_NOTICE:
        return "notice"
    if 0x80 <= first <= 0xBF:
        if size < 2:
            raise TruncatedError("RTP/RTCP datagram of one byte")
        return "rtcp" if 192 <= data[1] <= 223 else "rtp"
    raise UnknownTypeError(f"datagram type 0x{first:02x}")
