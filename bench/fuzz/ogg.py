"""Fuzz target ``ogg``: :func:`~loa.codecs.read_ogg_opus` on a real file holding the input.

``read_ogg_opus`` takes a path, so the input is written to one scratch file, overwritten in place for each
input (:class:`~loa.bench.fuzz._common.ScratchFile`); the reader opens and reads it as it would a stored
programme.

The first byte picks a mode: 0 - the rest as it is; 1 - the rest with the CRC of every complete page
recomputed first, so that mutations get past the checksum and reach the page sequence, continuation,
OpusHead, OpusTags and granule checks behind it.

Accepted errors: :class:`~loa.codecs.OggOpusError`. Oracle: a file that reads describes itself consistently
(packet count, final granule, size).
"""

from __future__ import annotations

import struct

from loa.bench.fuzz._common import ScratchFile, scratch
from loa.codecs import OggOpusError, OpusEncoder, frames, read_ogg_opus, tone, write_ogg_opus
from loa.codecs.ogg import crc32

MAX_LEN = 16384
_FILE = ScratchFile("input.opus")


def fix_crcs(data: bytes) -> bytes:
    """``data`` with the CRC field of every complete page (at a capture pattern, in sequence) recomputed."""
    out = bytearray(data)
    offset = 0
    while offset + 27 <= len(out) and out[offset : offset + 4] == b"OggS":
        nsegs = out[offset + 26]
        end = offset + 27 + nsegs
        if end > len(out):
            break
        end += sum(out[offset + 27 : end])
        if end > len(out):
            break
        out[offset + 22 : offset + 26] = b"\0\0\0\0"
        struct.pack_into("<I", out, offset + 22, crc32(out[offset:end]))
        offset = end
    return bytes(out)


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    if not data:
        return
    blob = fix_crcs(data[1:]) if data[0] % 2 else data[1:]
    _FILE.put(blob)
    try:
        info, packets = read_ogg_opus(_FILE.path)
    except OggOpusError:
        return
    if info.packet_count != len(packets) or info.size_bytes != len(blob):
        raise AssertionError(f"{info!r} does not describe its {len(packets)} packets and {len(blob)} bytes")
    if packets[-1].granule != info.final_granule or info.samples < 0:
        raise AssertionError(f"final granule {info.final_granule} is not the last packet's {packets[-1].granule}")


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for frame_ms in (20, 60):
        encoder = OpusEncoder(frame_ms=frame_ms)
        packets = [encoder.encode(f) for f in frames(tone(0.2).samples, frame_ms)]
        path = scratch() / f"seed-{frame_ms}.opus"
        write_ogg_opus(path, packets, frame_ms=frame_ms, tags={"TITLE": "thử"})
        blob = path.read_bytes()
        path.unlink()
        out[f"tone.{frame_ms}ms"] = b"\0" + blob
        out[f"tone.{frame_ms}ms.crc"] = b"\1" + blob
    return out
