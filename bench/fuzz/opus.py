"""Fuzz target ``opus``: Opus packet framing from the TOC byte, and libopus decoding of the same packet.

Accepted errors: :class:`~loa.codecs.CorruptPacketError`. Oracle: a packet libopus decodes has the duration
:func:`~loa.codecs.packet_samples` reads from its TOC.
"""

from __future__ import annotations

from loa.codecs import CorruptPacketError, OpusDecoder, OpusEncoder, frames, packet_samples, tone

MAX_LEN = 1500
DECODER = OpusDecoder()


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    try:
        samples: int | None = packet_samples(data)
    except CorruptPacketError:
        samples = None
    try:
        pcm = DECODER.decode(data)
    except CorruptPacketError:
        return
    if samples != len(pcm):
        raise AssertionError(f"libopus decoded {len(pcm)} samples; the TOC says {samples}")


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for frame_ms in (10, 20, 40, 60):
        encoder = OpusEncoder(frame_ms=frame_ms)
        for i, frame in enumerate(frames(tone(frame_ms / 1000 * 2).samples, frame_ms)):
            out[f"tone.{frame_ms}ms.{i}"] = encoder.encode(frame)
    return out
