"""RTCP (RFC 3550 section 6) and the RFC 4585 generic NACK, as compound packets.

:func:`parse_rtcp` turns one compound packet into a tuple of packet objects; :func:`build_rtcp` does the
reverse. Understood: SR (200), RR (201), SDES (202), BYE (203), generic NACK (205, FMT 1). APP (204), PSFB (206)
and XR (207) are kept uninterpreted as :class:`RawRtcp`. Reduced-size RTCP (RFC 5506) is accepted: a compound
packet need not start with SR or RR.

Failure semantics: :func:`parse_rtcp` raises only :class:`~loa.protocol.errors.RemoteProtocolError` subclasses
and returns nothing on failure (a compound packet is accepted whole or not at all):

* ``OversizeError`` above 1200 bytes; ``TruncatedError`` when a header or a length field runs past the end;
* ``MalformedError`` for a version other than 2, or padding on a packet that is not the last;
* ``UnknownTypeError`` for a packet type outside 200..207, or PT 205 with a FMT other than 1;
* ``BadLengthError`` when a length field disagrees with the content (report count, SDES chunks, NACK with no
  FCI or a partial one, an APP, PSFB or XR body that is not whole 32-bit words once padding is removed,
  trailing bytes) or a padding count is zero or too large.

The builders raise :class:`~loa.protocol.errors.LocalProtocolError` for values that do not fit their fields.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loa.protocol._rtcp_body import (
    SR_INFO,
    ReportBlock,
    SdesChunk,
    parse_bye,
    parse_report_blocks,
    parse_sdes,
    write_bye,
    write_report_blocks,
    write_sdes,
)
from loa.protocol.errors import (
    BadLengthError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
    TruncatedError,
    UnknownTypeError,
)
from loa.protocol.rtptime import seq_add, seq_diff

__all__ = [
    "PT_BYE",
    "PT_RR",
    "PT_RTPFB",
    "PT_SDES",
    "PT_SR",
    "Bye",
    "GenericNack",
    "RawRtcp",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "build_rtcp",
    "is_rtcp",
    "lost_from_pairs",
    "nack_pairs",
    "parse_rtcp",
]

PT_SR, PT_RR, PT_SDES, PT_BYE, PT_APP, PT_RTPFB, PT_PSFB, PT_XR = range(200, 208)
FMT_GENERIC_NACK = 1
MAX_DATAGRAM = 1200
_HEADER = struct.Struct("!BBH")
_TWO_SSRC = struct.Struct("!II")
_PAIR = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR: ``ntp`` is the 64-bit NTP timestamp that corresponds to ``rtp_timestamp`` on the sender's clock."""

    ssrc: int
    ntp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class GenericNack:
    """RFC 4585 generic NACK: ``lost`` lists the missing sequence numbers of ``media_ssrc``."""

    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RawRtcp:
    """An RTCP packet kept uninterpreted (APP, PSFB, XR): ``count`` is the 5-bit field, ``body`` follows the
    4-byte header."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | GenericNack | RawRtcp


def is_rtcp(datagram: bytes | bytearray | memoryview) -> bool:
    """Section 2.2 demultiplexing: version-2 first byte and a second byte of 192..223 (RFC 5761)."""
    return len(datagram) >= 2 and 0x80 <= datagram[0] <= 0xBF and 192 <= datagram[1] <= 223


def nack_pairs(lost: Iterable[int]) -> list[tuple[int, int]]:
    """Encode lost sequence numbers as (PID, BLP) pairs.

    The numbers are de-duplicated and put in circular order starting after the widest gap between them (the
    first such gap in numeric order), so a run across 65535 -> 0 stays together and the result does not
    depend on the order given. Each pair covers its PID and the 16 numbers after it. Raises
    :class:`LocalProtocolError` for a number that is not 16-bit.
    """
    seqs = sorted(set(lost))
    if any(not 0 <= s <= 0xFFFF for s in seqs):
        raise LocalProtocolError("sequence numbers must be 16-bit")
    if not seqs:
        return []
    gaps = [(seqs[(i + 1) % len(seqs)] - s) & 0xFFFF for i, s in enumerate(seqs)]
    start = gaps.index(max(gaps)) + 1
    seqs = seqs[start:] + seqs[:start]
    pairs: list[tuple[int, int]] = []
    pid, blp = seqs[0], 0
    for s in seqs[1:]:
        distance = seq_diff(s, pid)
        if 1 <= distance <= 16:
            blp |= 1 << (distance - 1)
        else:
            pairs.append((pid, blp))
            pid, blp = s, 0
    pairs.append((pid, blp))
    return pairs


def lost_from_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, ...]:
    """Expand (PID, BLP) pairs to the sequence numbers they name, in wire order, without duplicates."""
    out: dict[int, None] = {}
    for pid, blp in pairs:
        out[pid] = None
        for bit in range(16):
            if blp >> bit & 1:
                out[seq_add(pid, bit + 1)] = None
    return tuple(out)


def _body_size(packet: RtcpPacket) -> int:
    match packet:
        case SenderReport():
            return SR_INFO.size + 24 * len(packet.reports)
        case ReceiverReport():
            return 4 + 24 * len(packet.reports)
        case SourceDescription():
            return sum(c.size for c in packet.chunks)
        case Bye():
            return 4 * len(packet.ssrcs) + ((1 + len(packet.reason) + 3) & ~3 if packet.reason else 0)
        case GenericNack():
            return 8 + 4 * len(nack_pairs(packet.lost))
        case RawRtcp():
            return len(packet.body)


def _count_and_type(packet: RtcpPacket) -> tuple[int, int]:
    match packet:
        case SenderReport():
            return len(packet.reports), PT_SR
        case ReceiverReport():
            return len(packet.reports), PT_RR
        case SourceDescription():
            return len(packet.chunks), PT_SDES
        case Bye():
            return len(packet.ssrcs), PT_BYE
        case GenericNack():
            return FMT_GENERIC_NACK, PT_RTPFB
        case RawRtcp():
            return packet.count, packet.packet_type


def _check(packet: RtcpPacket) -> None:
    count, _ = _count_and_type(packet)
    if count > 31:
        raise LocalProtocolError(f"RTCP count field {count} exceeds 31")
    if isinstance(packet, RawRtcp) and (packet.packet_type not in (PT_APP, PT_PSFB, PT_XR) or len(packet.body) % 4):
        raise LocalProtocolError("raw RTCP packets are APP, PSFB or XR with a body of whole 32-bit words")
    if isinstance(packet, GenericNack) and not packet.lost:
        raise LocalProtocolError("a generic NACK needs at least one lost sequence number")
    if isinstance(packet, Bye) and len(packet.reason) > 255:
        raise LocalProtocolError("BYE reason longer than 255 bytes")
    if isinstance(packet, SourceDescription):
        for chunk in packet.chunks:
            chunk.check()


def build_rtcp(packets: Sequence[RtcpPacket], *, padding: int = 0) -> bytes:
    """Serialise ``packets`` as one compound RTCP packet; ``padding`` bytes (0 or 4..252, a multiple of 4) are
    added to the last one. Raises :class:`LocalProtocolError` (nothing built) for values that do not fit."""
    if not packets:
        raise LocalProtocolError("a compound RTCP packet needs at least one packet")
    if padding and (padding % 4 or not 4 <= padding <= 252):
        raise LocalProtocolError("RTCP padding must be a multiple of 4 in 4..252")
    for packet in packets:
        _check(packet)
    sizes = [4 + _body_size(p) for p in packets]
    buf = bytearray(sum(sizes) + padding)
    pos = 0
    for i, (packet, size) in enumerate(zip(packets, sizes, strict=True)):
        last = i == len(packets) - 1
        pad = padding if last else 0
        count, packet_type = _count_and_type(packet)
        try:
            _HEADER.pack_into(buf, pos, 0x80 | (0x20 if pad else 0) | count, packet_type, (size + pad) // 4 - 1)
            _write_body(packet, buf, pos + 4)
        except struct.error as exc:
            raise LocalProtocolError(f"RTCP field out of range: {exc}") from None
        pos += size
        if pad:
            buf[pos + pad - 1] = pad
    if len(buf) > MAX_DATAGRAM:
        raise LocalProtocolError(f"compound RTCP packet of {len(buf)} bytes exceeds {MAX_DATAGRAM}")
    return bytes(buf)


def _write_body(packet: RtcpPacket, buf: bytearray, pos: int) -> None:
    match packet:
        case SenderReport():
            SR_INFO.pack_into(
                buf, pos, packet.ssrc, packet.ntp, packet.rtp_timestamp, packet.packet_count, packet.octet_count
            )
            write_report_blocks(packet.reports, buf, pos + SR_INFO.size)
        case ReceiverReport():
            struct.pack_into("!I", buf, pos, packet.ssrc)
            write_report_blocks(packet.reports, buf, pos + 4)
        case SourceDescription():
            write_sdes(packet.chunks, buf, pos)
        case Bye():
            write_bye(packet.ssrcs, packet.reason, buf, pos)
        case GenericNack():
            _TWO_SSRC.pack_into(buf, pos, packet.sender_ssrc, packet.media_ssrc)
            for i, pair in enumerate(nack_pairs(packet.lost)):
                _PAIR.pack_into(buf, pos + 8 + 4 * i, *pair)
        case RawRtcp():
            buf[pos : pos + len(packet.body)] = packet.body


def parse_rtcp(data: bytes | bytearray | memoryview) -> tuple[RtcpPacket, ...]:
    """Parse one compound RTCP packet strictly (see the module docstring for the errors)."""
    view = memoryview(data)
    n = len(view)
    if n > MAX_DATAGRAM:
        raise OversizeError(f"RTCP packet of {n} bytes exceeds {MAX_DATAGRAM}")
    if n == 0:
        raise TruncatedError("empty RTCP packet")
    out: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if n - pos < 4:
            raise TruncatedError(f"RTCP header needs 4 bytes, {n - pos} left")
        first, packet_type, words = _HEADER.unpack_from(view, pos)
        if first >> 6 != 2:
            raise MalformedError(f"RTCP version {first >> 6} is not 2")
        size = 4 * (words + 1)
        if size > n - pos:
            raise TruncatedError(f"RTCP length {size} runs past the end ({n - pos} bytes left)")
        body = view[pos + 4 : pos + size]
        pos += size
        if first & 0x20:
            if pos != n:
                raise MalformedError("padding on an RTCP packet that is not the last of the compound")
            pad = body[-1] if len(body) else 0
            if pad == 0 or pad > len(body):
                raise BadLengthError(f"RTCP padding count {pad} with a body of {len(body)} bytes")
            body = body[: len(body) - pad]
        out.append(_parse_one(first & 0x1F, packet_type, body))
    return tuple(out)


def _parse_one(count: int, packet_type: int, body: memoryview) -> RtcpPacket:
    if packet_type == PT_SR:
        if len(body) != SR_INFO.size + 24 * count:
            raise BadLengthError(f"SR with {count} reports has {len(body)} body bytes")
        ssrc, ntp, rtp_ts, packets, octets = SR_INFO.unpack_from(body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, parse_report_blocks(body[SR_INFO.size :], count))
    if packet_type == PT_RR:
        if len(body) != 4 + 24 * count:
            raise BadLengthError(f"RR with {count} reports has {len(body)} body bytes")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc, parse_report_blocks(body[4:], count))
    if packet_type == PT_SDES:
        return SourceDescription(parse_sdes(body, count))
    if packet_type == PT_BYE:
        ssrcs, reason = parse_bye(body, count)
        return Bye(ssrcs, reason)
    if packet_type == PT_RTPFB:
        if count != FMT_GENERIC_NACK:
            raise UnknownTypeError(f"RTPFB FMT {count} is not generic NACK (1)")
        if len(body) < 12 or len(body) % 4:
            raise BadLengthError(f"generic NACK of {len(body)} body bytes has no FCI or a partial one")
        sender, media = _TWO_SSRC.unpack_from(body)
        pairs = [_PAIR.unpack_from(body, off) for off in range(8, len(body), 4)]
        return GenericNack(sender, media, lost_from_pairs(pairs))
    if packet_type in (PT_APP, PT_PSFB, PT_XR):
        if len(body) % 4:
            raise BadLengthError(f"RTCP packet type {packet_type} has a body of {len(body)} bytes, not whole words")
        return RawRtcp(packet_type, count, bytes(body))
    raise UnknownTypeError(f"RTCP packet type {packet_type} is not defined here")
