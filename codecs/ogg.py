"""Ogg pages (RFC 3533) for one logical stream: the CRC, a page builder and a strict page/packet reader.

The Ogg CRC-32 is the MSB-first CRC with polynomial 0x04C11DB7, initial value 0 and no final XOR. It is
computed here with :func:`zlib.crc32` (the reflected variant, in C) on bit-reversed bytes, which gives the
same register bit-reversed, so checking a page costs no Python loop per byte.

The reader is deliberately strict, because a stored programme that does not read back exactly is damaged:
it raises :class:`OggError` (a plain ``ValueError``; :mod:`loa.codecs.oggopus` turns it into an
``OggOpusError`` naming the file) on a missing capture pattern, a truncated page, a CRC mismatch, a gap in
page sequence numbers, a second logical stream, a misplaced continuation flag or a packet left unfinished
at the end of the stream. Pages are never resynchronised past damage the way players do.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["FLAG_BOS", "FLAG_CONTINUED", "FLAG_EOS", "OggError", "OggPage", "build_page", "crc32", "read_pages"]

FLAG_CONTINUED: Final = 0x01
FLAG_BOS: Final = 0x02
FLAG_EOS: Final = 0x04
_HEADER: Final = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, crc, segments
_MAX_SEGMENTS: Final = 255
#: The largest packet one page can hold complete (255 lacing values of 255 bytes, ended by a value < 255).
MAX_PAGE_PACKET: Final = 255 * 255 - 1

_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


class OggError(ValueError):
    """The byte stream is not a well-formed single-stream Ogg bitstream (message says where and why)."""


def crc32(data: bytes | bytearray | memoryview) -> int:
    """The Ogg CRC-32 of ``data`` (polynomial 0x04C11DB7, MSB first, initial 0, no final XOR)."""
    reflected = zlib.crc32(bytes(data).translate(_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def build_page(packets: Sequence[bytes], *, granule: int, serial: int, sequence: int, flags: int = 0) -> bytes:
    """One page holding ``packets`` complete (none continued to or from another page), CRC filled in.

    Raises ``ValueError`` if the packets need more than 255 lacing values together.
    """
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes((len(packet) % 255,))
    if len(lacing) > _MAX_SEGMENTS:
        raise ValueError(f"{sum(map(len, packets))} bytes of packets need {len(lacing)} lacing values (max 255)")
    header = _HEADER.pack(b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    page = bytearray(header + lacing + b"".join(packets))
    struct.pack_into("<I", page, 22, crc32(page))
    return bytes(page)


@dataclass(frozen=True)
class OggPage:
    """A page as read: its header fields, and the packets that *end* on it (their earlier parts included).

    ``granule`` is -1 when no packet ends on the page. ``offset`` is the page's byte offset in the file.
    """

    offset: int
    sequence: int
    flags: int
    granule: int
    serial: int
    packets: tuple[bytes, ...]

    @property
    def bos(self) -> bool:
        return bool(self.flags & FLAG_BOS)

    @property
    def eos(self) -> bool:
        return bool(self.flags & FLAG_EOS)


def read_pages(data: bytes) -> Iterator[OggPage]:
    """Parse ``data`` as one complete logical Ogg stream, yielding its pages in order (see module doc)."""
    offset = 0
    pending: bytearray | None = None  # a packet continued onto the next page
    serial: int | None = None
    expected_sequence = 0
    eos_seen = False
    while offset < len(data):
        if eos_seen:
            raise OggError(f"data after the end-of-stream page at byte {offset} (chained streams unsupported)")
        if len(data) - offset < _HEADER.size:
            raise OggError(f"truncated page header at byte {offset}")
        capture, version, flags, granule, page_serial, sequence, crc, nsegs = _HEADER.unpack_from(data, offset)
        if capture != b"OggS":
            raise OggError(f"no Ogg page at byte {offset}")
        if version != 0 or flags & ~(FLAG_CONTINUED | FLAG_BOS | FLAG_EOS):
            raise OggError(f"unsupported Ogg page version or flags at byte {offset}")
        lacing_end = offset + _HEADER.size + nsegs
        if lacing_end > len(data):
            raise OggError(f"truncated page at byte {offset}")
        lacing = data[offset + _HEADER.size:lacing_end]
        end = lacing_end + sum(lacing)
        if end > len(data):
            raise OggError(f"truncated page at byte {offset} (file ends inside it)")
        page = bytearray(data[offset:end])
        page[22:26] = b"\0\0\0\0"
        if crc32(page) != crc:
            raise OggError(f"CRC mismatch in page {sequence} at byte {offset} (damaged data)")
        if serial is None:
            if not flags & FLAG_BOS:
                raise OggError("first page is not a beginning-of-stream page")
            serial = page_serial
        elif page_serial != serial:
            raise OggError(f"a second logical stream at byte {offset} (multiplexed streams unsupported)")
        elif flags & FLAG_BOS:
            raise OggError(f"unexpected beginning-of-stream flag at byte {offset}")
        if sequence != expected_sequence:
            raise OggError(f"page {expected_sequence} missing (found page {sequence} at byte {offset})")
        if bool(flags & FLAG_CONTINUED) != (pending is not None):
            raise OggError(f"continuation flag inconsistent with the previous page at byte {offset}")
        packets: list[bytes] = []
        body = lacing_end
        current = pending if pending is not None else bytearray()
        for value in lacing:
            current += data[body:body + value]
            body += value
            if value < 255:
                packets.append(bytes(current))
                current = bytearray()
        pending = current if nsegs and lacing[-1] == 255 else None
        if packets and granule == -1:
            raise OggError(f"page {sequence} ends packets but has no granule position")
        eos_seen = bool(flags & FLAG_EOS)
        yield OggPage(offset, sequence, flags, granule, page_serial, tuple(packets))
        expected_sequence = (expected_sequence + 1) & 0xFFFFFFFF
        offset = end
    if serial is None:
        raise OggError("no Ogg pages")
    if pending is not None:
        raise OggError("stream ends inside a packet (truncated)")
    if not eos_seen:
        raise OggError("no end-of-stream page (truncated file)")
