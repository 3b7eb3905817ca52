"""Store a programme: any audio file -> loudness-normalised 48 kHz mono -> Opus -> Ogg Opus file.

:func:`encode_file_to_ogg_opus` is ingest + encoder + writer in one call and returns what a catalogue needs:
duration, loudness before normalisation, the gain applied and the sha256 of the written file (its content
address). The whole programme is encoded, including the frames that flush the encoder delay, so the file
decodes to exactly the source's length (pre-skip removed at the start, padding trimmed at the end).

Failure semantics: those of the parts. :class:`IngestError` for an unreadable source, :class:`ConfigError`
for bad settings, :class:`OggOpusError` (``writing`` true) if the destination cannot be written; in every
failure case nothing is left at the destination.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from loa.codecs.audio import Audio, frames
from loa.codecs.ingest import load_audio
from loa.codecs.oggopus import Tags, write_ogg_opus
from loa.codecs.opus import Application, OpusEncoder

__all__ = ["EncodedProgramme", "encode_file_to_ogg_opus"]


@dataclass(frozen=True)
class EncodedProgramme:
    """A programme written to ``path``: duration (s), source loudness before normalisation (LUFS, ``None``
    if unmeasurable), the gain applied (dB), the file's sha256 (hex), its size and its packet count."""

    path: str
    duration_s: float
    loudness_lufs: float | None
    gain_db: float
    sha256: str
    size_bytes: int
    packets: int


def encode_file_to_ogg_opus(src: str | os.PathLike[str] | Audio, dst: str | os.PathLike[str], *,
                            frame_ms: int = 20, bitrate: int = 64_000, complexity: int = 10,
                            application: Application = "audio", target_lufs: float | None = -16.0,
                            max_seconds: float | None = None, tags: Tags | None = None) -> EncodedProgramme:
    """Load ``src`` (a file, or ready :class:`Audio` used as is), encode it and write ``dst`` atomically.

    ``target_lufs``/``max_seconds`` are passed to :func:`load_audio`; ``frame_ms``, ``bitrate``,
    ``complexity`` and ``application`` to :class:`OpusEncoder`. ``tags`` are written as Vorbis comments.
    """
    audio = src if isinstance(src, Audio) else load_audio(src, target_lufs=target_lufs, max_seconds=max_seconds)
    with OpusEncoder(frame_ms=frame_ms, bitrate=bitrate, complexity=complexity,
                     application=application) as encoder:
        pre_skip = encoder.lookahead
        n = encoder.frame_samples
        total = int(audio.samples.shape[0])
        packets = [encoder.encode(frame) for frame in frames(audio, frame_ms)]
        silence = np.zeros(n, dtype=np.int16)
        while len(packets) * n < pre_skip + total:  # flush the encoder delay
            packets.append(encoder.encode(silence))
    info = write_ogg_opus(dst, packets, frame_ms=frame_ms, pre_skip=pre_skip, tags=tags, total_samples=total)
    return EncodedProgramme(path=os.fspath(dst), duration_s=info.duration_s, loudness_lufs=audio.loudness_lufs,
                            gain_db=audio.gain_db, sha256=info.sha256, size_bytes=info.size_bytes,
                            packets=info.packet_count)
