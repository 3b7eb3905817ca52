"""RTP packets (RFC 3550) with RFC 8285 one-byte header extensions and the RFC 6051 ntp-64 element.

Sans-I/O: :func:`parse_rtp` turns a datagram into an :class:`RtpPacket`; :meth:`RtpPacket.write_into` and
:meth:`RtpPacket.to_bytes` turn one back into bytes. :func:`write_opus_rtp` is the allocation-free writer the
packetizer uses per frame. Sequence-number and timestamp arithmetic and NTP <-> server-time conversion are
defined in :mod:`loa.protocol.rtptime` and re-exported here.

Failure semantics: :func:`parse_rtp` raises only :class:`~loa.protocol.errors.RemoteProtocolError` subclasses
(never anything else) for any input bytes, and builds nothing on failure. The writers raise
:class:`~loa.protocol.errors.LocalProtocolError` for field values that cannot be put on the wire, before they
write a byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from loa.protocol.errors import (
    BadLengthError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
    TruncatedError,
)
from loa.protocol.rtptime import (
    SeqUnwrapper,
    ns_to_ntp64,
    ntp64_to_ns,
    seq_add,
    seq_diff,
    seq_newer,
    ts_add,
    ts_diff,
)

__all__ = [
    "EXT_PROFILE_ONE_BYTE",
    "MAX_DATAGRAM",
    "NTP64_EXT_ID",
    "OPUS_PAYLOAD_TYPE",
    "RAPID_SYNC_PACKETS",
    "RTP_HEADER_SIZE",
    "ExtensionElement",
    "RtpPacket",
    "SeqUnwrapper",
    "ns_to_ntp64",
    "ntp64_to_ns",
    "parse_rtp",
    "seq_add",
    "seq_diff",
    "seq_newer",
    "ts_add",
    "ts_diff",
    "write_opus_rtp",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
OPUS_PAYLOAD_TYPE = 111
EXT_PROFILE_ONE_BYTE = 0xBEDE
NTP64_EXT_ID = 1
RAPID_SYNC_PACKETS = 5
MAX_DATAGRAM = 1200
NTP64_EXT_SIZE = 16  # BE DE 00 03 | 17 | 8 bytes NTP | 00 00 00

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_NTP64_EXT = struct.Struct("!HHBQ3x")


@dataclass(frozen=True, slots=True)
class ExtensionElement:
    """One RFC 8285 one-byte-header element: ``id`` 1..14 and 1..16 bytes of ``data``."""

    id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet.

    ``extension_profile`` is ``None`` when the X bit is clear. With ``0xBEDE`` (RFC 8285 one-byte form) the
    elements are in ``extensions``; with any other profile the raw extension body (a multiple of 4 bytes) is
    in ``extension_data``. ``padding`` is the number of RTP padding bytes including the final count byte
    (0 = P bit clear); padding bytes are written as zeros except the count.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extensions: tuple[ExtensionElement, ...] = ()
    extension_data: bytes = b""
    padding: int = 0

    @property
    def ntp64(self) -> int | None:
        """The RFC 6051 ntp-64 value (element ID 1, 8 bytes) if the packet carries one."""
        if self.extension_profile != EXT_PROFILE_ONE_BYTE:
            return None
        for element in self.extensions:
            if element.id == NTP64_EXT_ID and len(element.data) == 8:
                return int.from_bytes(element.data, "big")
        return None

    def _extension_body_size(self) -> int:
        if self.extension_profile is None:
            return 0
        if self.extension_profile == EXT_PROFILE_ONE_BYTE:
            used = sum(1 + len(e.data) for e in self.extensions)
            return (used + 3) & ~3
        return len(self.extension_data)

    @property
    def size(self) -> int:
        """Number of bytes :meth:`write_into` writes."""
        ext = self._extension_body_size()
        return (
            RTP_HEADER_SIZE
            + 4 * len(self.csrcs)
            + (4 + ext if self.extension_profile is not None else 0)
            + len(self.payload)
            + self.padding
        )

    def _check(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise LocalProtocolError(f"payload type {self.payload_type} is not 0..127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise LocalProtocolError(f"sequence number {self.sequence} is not 16-bit")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise LocalProtocolError("timestamp and SSRC must be 32-bit")
        if len(self.csrcs) > 15 or any(not 0 <= c <= 0xFFFFFFFF for c in self.csrcs):
            raise LocalProtocolError("at most 15 CSRCs, each 32-bit")
        if not 0 <= self.padding <= 255:
            raise LocalProtocolError(f"padding {self.padding} is not 0..255")
        profile = self.extension_profile
        if profile is None:
            if self.extensions or self.extension_data:
                raise LocalProtocolError("extension elements or data without an extension profile")
            return
        if not 0 <= profile <= 0xFFFF:
            raise LocalProtocolError(f"extension profile {profile:#x} is not 16-bit")
        if profile == EXT_PROFILE_ONE_BYTE:
            if self.extension_data:
                raise LocalProtocolError("one-byte extensions are given as elements, not raw data")
            for e in self.extensions:
                if not 1 <= e.id <= 14 or not 1 <= len(e.data) <= 16:
                    raise LocalProtocolError(f"one-byte element id {e.id} / length {len(e.data)} out of range")
        elif self.extensions or len(self.extension_data) % 4 or len(self.extension_data) > 4 * 0xFFFF:
            raise LocalProtocolError("raw extension data must be a multiple of 4 bytes and carries no elements")

    def write_into(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Write the packet into ``buf`` at ``offset``; return the number of bytes written.

        Raises :class:`LocalProtocolError` for out-of-range fields or a buffer that is too small, before writing.
        """
        self._check()
        size = self.size
        if offset < 0 or len(buf) - offset < size:
            raise LocalProtocolError(f"buffer too small for a {size}-byte RTP packet")
        has_ext = self.extension_profile is not None
        first = 0x80 | (0x20 if self.padding else 0) | (0x10 if has_ext else 0) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        _HEADER.pack_into(buf, offset, first, second, self.sequence, self.timestamp, self.ssrc)
        pos = offset + RTP_HEADER_SIZE
        for csrc in self.csrcs:
            struct.pack_into("!I", buf, pos, csrc)
            pos += 4
        if self.extension_profile is not None:
            body = self._extension_body_size()
            _EXT_HEADER.pack_into(buf, pos, self.extension_profile, body // 4)
            pos += 4
            end = pos + body
            if self.extension_profile == EXT_PROFILE_ONE_BYTE:
                for e in self.extensions:
                    buf[pos] = (e.id << 4) | (len(e.data) - 1)
                    buf[pos + 1 : pos + 1 + len(e.data)] = e.data
                    pos += 1 + len(e.data)
                buf[pos:end] = bytes(end - pos)
            else:
                buf[pos:end] = self.extension_data
            pos = end
        buf[pos : pos + len(self.payload)] = self.payload
        pos += len(self.payload)
        if self.padding:
            buf[pos : pos + self.padding - 1] = bytes(self.padding - 1)
            buf[pos + self.padding - 1] = self.padding
            pos += self.padding
        return pos - offset

    def to_bytes(self) -> bytes:
        """The packet as bytes. Raises :class:`LocalProtocolError` for fields that cannot be encoded."""
        self._check()
        buf = bytearray(self.size)
        self.write_into(buf)
        return bytes(buf)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP packet strictly.

    Raises ``OversizeError`` above 1200 bytes, ``TruncatedError`` when the fixed header, CSRC list or
    extension runs past the end, ``MalformedError`` for a version other than 2, an RTCP payload type
    (RFC 5761 range 72..95 with the marker bit) or a non-zero byte where RFC 8285 allows only padding,
    and ``BadLengthError`` for a padding count of zero or larger than what follows the header, or a one-byte
    element that runs past its extension block.
    """
    view = memoryview(data)
    n = len(view)
    if n > MAX_DATAGRAM:
        raise OversizeError(f"RTP packet of {n} bytes exceeds {MAX_DATAGRAM}")
    if n < RTP_HEADER_SIZE:
        raise TruncatedError(f"RTP header needs 12 bytes, got {n}")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(view)
    if first >> 6 != RTP_VERSION:
        raise MalformedError(f"RTP version {first >> 6} is not 2")
    if 192 <= second <= 223:
        raise MalformedError(f"second byte {second} is in the RTCP range (RFC 5761)")
    cc = first & 0x0F
    pos = RTP_HEADER_SIZE
    if n < pos + 4 * cc:
        raise TruncatedError(f"CSRC list of {cc} entries runs past the end")
    csrcs = struct.unpack_from(f"!{cc}I", view, pos)
    pos += 4 * cc
    end = n
    padding = 0
    if first & 0x20:
        padding = view[n - 1]
        if padding == 0:
            raise BadLengthError("padding count of zero")
    profile: int | None = None
    elements: tuple[ExtensionElement, ...] = ()
    raw = b""
    if first & 0x10:
        if n < pos + 4:
            raise TruncatedError("extension header runs past the end")
        profile, words = _EXT_HEADER.unpack_from(view, pos)
        pos += 4
        if n < pos + 4 * words:
            raise TruncatedError(f"extension of {words} words runs past the end")
        body = view[pos : pos + 4 * words]
        pos += 4 * words
        if profile == EXT_PROFILE_ONE_BYTE:
            elements = _parse_one_byte(body)
        else:
            raw = bytes(body)
    if padding:
        if padding > n - pos:
            raise BadLengthError(f"padding count {padding} exceeds the {n - pos} bytes after the header")
        end = n - padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(view[pos:end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension_profile=profile,
        extensions=elements,
        extension_data=raw,
        padding=padding,
    )


def _parse_one_byte(body: memoryview) -> tuple[ExtensionElement, ...]:
    elements: list[ExtensionElement] = []
    i = 0
    while i < len(body):
        byte = body[i]
        ident, length = byte >> 4, (byte & 0x0F) + 1
        if ident == 0:
            if byte:
                raise MalformedError(f"one-byte extension byte {byte:#04x} has ID 0 but is not padding")
            i += 1
            continue
        if ident == 15:
            break  # RFC 8285 section 4.2: stop processing at ID 15
        if i + 1 + length > len(body):
            raise BadLengthError(f"extension element ID {ident} of {length} bytes runs past its block")
        elements.append(ExtensionElement(ident, bytes(body[i + 1 : i + 1 + length])))
        i += 1 + length
    return tuple(elements)


def write_opus_rtp(
    buf: bytearray | memoryview,
    *,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    ntp64: int | None = None,
    payload_type: int = OPUS_PAYLOAD_TYPE,
) -> int:
    """Write a CSRC-free RTP packet, with the 16-byte ntp-64 extension when ``ntp64`` is given, into ``buf``.

    Returns the number of bytes written. The per-frame path of the packetizer: no intermediate objects.
    Raises :class:`LocalProtocolError` (nothing written) when a field is out of range or ``buf`` is too small.
    """
    size = RTP_HEADER_SIZE + (NTP64_EXT_SIZE if ntp64 is not None else 0) + len(payload)
    if len(buf) < size:
        raise LocalProtocolError(f"buffer too small for a {size}-byte RTP packet")
    if not (0 <= sequence <= 0xFFFF and 0 <= timestamp <= 0xFFFFFFFF and 0 <= ssrc <= 0xFFFFFFFF):
        raise LocalProtocolError("sequence must be 16-bit, timestamp and SSRC 32-bit")
    if not 0 <= payload_type <= 127:
        raise LocalProtocolError(f"payload type {payload_type} is not 0..127")
    if ntp64 is not None and not 0 <= ntp64 <= 0xFFFFFFFFFFFFFFFF:
        raise LocalProtocolError("ntp64 must be a 64-bit value")
    first = 0x90 if ntp64 is not None else 0x80
    _HEADER.pack_into(buf, 0, first, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)
    pos = RTP_HEADER_SIZE
    if ntp64 is not None:
        _NTP64_EXT.pack_into(buf, pos, EXT_PROFILE_ONE_BYTE, 3, (NTP64_EXT_ID << 4) | 7, ntp64)
        pos += NTP64_EXT_SIZE
    buf[pos : pos + len(payload)] = payload
    return size
