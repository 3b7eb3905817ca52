"""Bodies of RTCP packets: report blocks (SR/RR), SDES chunks and BYE (RFC 3550 sections 6.4-6.6).

Parsers raise ``BadLengthError`` when the bytes do not hold exactly what the count field announces and
``MalformedError`` for non-zero bytes where the layout requires null padding; writers assume the caller
checked sizes (they are used only by :func:`loa.protocol.rtcp.build_rtcp`, which does).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from loa.protocol.errors import BadLengthError, LocalProtocolError, MalformedError

SR_INFO = struct.Struct("!IQIII")  # ssrc, ntp, rtp timestamp, packet count, octet count
_BLOCK = struct.Struct("!IBBHIIII")  # ssrc, fraction, lost (24-bit as 8 + 16), highest seq, jitter, lsr, dlsr


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report. ``cumulative_lost`` is signed 24-bit (duplicates can make it negative);
    ``highest_seq`` is the extended highest sequence number (cycles << 16 | seq)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk: an SSRC and its (item type, value) pairs; type 1 is CNAME."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...]

    @property
    def size(self) -> int:
        return (4 + sum(2 + len(value) for _, value in self.items) + 1 + 3) & ~3

    def check(self) -> None:
        """Raise :class:`LocalProtocolError` for an item type outside 1..255 or a value over 255 bytes."""
        for item_type, value in self.items:
            if not 1 <= item_type <= 255 or len(value) > 255:
                raise LocalProtocolError(f"SDES item type {item_type} / length {len(value)} out of range")


def parse_report_blocks(body: memoryview, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for i in range(count):
        ssrc, fraction, lost_hi, lost_lo, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, 24 * i)
        lost = (lost_hi << 16) | lost_lo
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, fraction, lost, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def write_report_blocks(blocks: Sequence[ReportBlock], buf: bytearray, pos: int) -> None:
    for i, b in enumerate(blocks):
        if not -(1 << 23) <= b.cumulative_lost < 1 << 23:
            raise LocalProtocolError(f"cumulative lost {b.cumulative_lost} is not signed 24-bit")
        lost = b.cumulative_lost & 0xFFFFFF
        fields = (b.ssrc, b.fraction_lost, lost >> 16, lost & 0xFFFF, b.highest_seq, b.jitter, b.lsr, b.dlsr)
        _BLOCK.pack_into(buf, pos + 24 * i, *fields)


def parse_sdes(body: memoryview, count: int) -> tuple[SdesChunk, ...]:
    chunks = []
    pos = 0
    for _ in range(count):
        if len(body) - pos < 8:
            raise BadLengthError("SDES chunk runs past the end of the packet")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= len(body):
                raise BadLengthError("SDES chunk has no terminating null item")
            item_type = body[pos]
            if item_type == 0:
                end = (pos + 1 + 3) & ~3
                if end > len(body) or any(body[pos:end]):
                    raise MalformedError("SDES chunk padding is not null bytes to a 32-bit boundary")
                pos = end
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise BadLengthError(f"SDES item {item_type} runs past the end of the packet")
            length = body[pos + 1]
            items.append((item_type, bytes(body[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if pos != len(body):
        raise BadLengthError(f"{len(body) - pos} bytes after the last SDES chunk")
    return tuple(chunks)


def write_sdes(chunks: Sequence[SdesChunk], buf: bytearray, pos: int) -> None:
    for chunk in chunks:
        struct.pack_into("!I", buf, pos, chunk.ssrc)
        p = pos + 4
        for item_type, value in chunk.items:
            buf[p] = item_type
            buf[p + 1] = len(value)
            buf[p + 2 : p + 2 + len(value)] = value
            p += 2 + len(value)
        pos += chunk.size  # the terminating null and the padding are already zero


def parse_bye(body: memoryview, count: int) -> tuple[tuple[int, ...], bytes]:
    if len(body) < 4 * count:
        raise BadLengthError(f"BYE with {count} sources has {len(body)} body bytes")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    rest = body[4 * count :]
    if not len(rest):
        return tuple(ssrcs), b""
    length = rest[0]
    if (1 + length + 3) & ~3 != len(rest):
        raise BadLengthError(f"BYE reason of {length} bytes in {len(rest)} bytes")
    if any(rest[1 + length :]):
        raise MalformedError("BYE reason padding is not null bytes")
    return tuple(ssrcs), bytes(rest[1 : 1 + length])


def write_bye(ssrcs: Sequence[int], reason: bytes, buf: bytearray, pos: int) -> None:
    struct.pack_into(f"!{len(ssrcs)}I", buf, pos, *ssrcs)
    if reason:
        p = pos + 4 * len(ssrcs)
        buf[p] = len(reason)
        buf[p + 1 : p + 1 + len(reason)] = reason
