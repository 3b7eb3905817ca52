"""Opus packet framing (RFC 6716 §3.1) read from the TOC byte, without decoding anything.

Used by the Ogg Opus reader and writer to compute granule positions, and by callers that need a packet's
duration before decoding it (jitter buffers, FEC bookkeeping). This checks only what the TOC and frame count
byte say; a packet that passes can still be rejected by the decoder (:class:`CorruptPacketError` there).
"""

from __future__ import annotations

from loa.codecs.errors import CorruptPacketError

__all__ = ["MAX_PACKET_SAMPLES", "packet_samples"]

#: The longest duration one Opus packet can carry: 120 ms at 48 kHz.
MAX_PACKET_SAMPLES = 5760

# Samples per frame at 48 kHz for each of the 32 TOC configurations (RFC 6716 Table 2):
# 0-11 SILK-only 10/20/40/60 ms, 12-15 hybrid 10/20 ms, 16-31 CELT-only 2.5/5/10/20 ms.
_FRAME_SAMPLES = (
    (480, 960, 1920, 2880) * 3
    + (480, 960) * 2
    + (120, 240, 480, 960) * 4
)


def packet_samples(packet: bytes | bytearray | memoryview) -> int:
    """Return how many 48 kHz samples (per channel) ``packet`` decodes to.

    Raises :class:`CorruptPacketError` if the packet is empty, a code-3 packet lacks its frame count byte or
    declares zero frames, or the total exceeds 120 ms (all of which RFC 6716 forbids).
    """
    if len(packet) == 0:
        raise CorruptPacketError("empty Opus packet")
    toc = packet[0]
    per_frame = _FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        return per_frame
    if code in (1, 2):
        return 2 * per_frame
    if len(packet) < 2:
        raise CorruptPacketError("Opus code-3 packet without its frame count byte")
    count = packet[1] & 0x3F
    if count == 0:
        raise CorruptPacketError("Opus code-3 packet declares zero frames")
    total = count * per_frame
    if total > MAX_PACKET_SAMPLES:
        raise CorruptPacketError(f"Opus packet of {total / 48:g} ms exceeds the 120 ms limit")
    return total
