"""Fuzz target ``ingest``: :func:`~loa.codecs.load_audio` (PyAV/ffmpeg) on a real file holding the input.

This is what an uploaded programme goes through: probing and demuxing, decoding, resampling to 48 kHz
mono, loudness measurement, true peak and gain. ``max_seconds`` is 1 s here (the library allows an hour) so
that one input costs a millisecond or two, not minutes: decoding stops after the first second of audio, so a
header claiming hours of audio costs no more than one claiming a second; one second is still longer than a
400 ms loudness block, so an input that decodes to more than 400 ms is measured as a long file is (shorter ones
are unmeasurable and get only the true-peak check, as they would in the server). The code path is the same as
for a long file, except that what lies beyond the first second is never decoded. The input is written to one
scratch file, overwritten in place for each input (:class:`~loa.bench.fuzz._common.ScratchFile`). ffmpeg's C
code is not instrumented: the fuzzer is guided by loa's Python around it, and a crash inside ffmpeg still
shows as a crash of the process.

Accepted errors: :class:`~loa.codecs.IngestError`. Oracle: decoded audio is finite, 48 kHz mono, non-empty,
no longer than ``max_seconds``.
"""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np

from loa.bench.fuzz._common import ScratchFile
from loa.codecs import SAMPLE_RATE, IngestError, load_audio, tone

MAX_LEN = 32768
MAX_SECONDS = 1.0
_FILE = ScratchFile("upload")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    _FILE.put(data)
    try:
        audio = load_audio(_FILE.path, max_seconds=MAX_SECONDS)
    except IngestError:
        return
    samples = audio.samples
    if samples.ndim != 1 or not 0 < len(samples) <= MAX_SECONDS * SAMPLE_RATE:
        raise AssertionError(f"decoded audio has shape {samples.shape}")
    if not np.isfinite(samples.astype(np.float32)).all():
        raise AssertionError("decoded audio holds NaN or infinity")


def _encode(container_format: str, codec: str, rate: int, layout: str) -> bytes:
    pcm = tone(0.05).samples
    out = io.BytesIO()
    with av.open(out, "w", format=container_format) as container:
        stream: Any = container.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.resize(pcm, (1, len(pcm) * rate // SAMPLE_RATE)).astype(np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def seeds() -> dict[str, bytes]:
    return {
        "wav": _encode("wav", "pcm_s16le", 8000, "mono"),
        "wav.stereo": _encode("wav", "pcm_s16le", 22050, "stereo"),
        "flac": _encode("flac", "flac", 16000, "mono"),
        "mp3": _encode("mp3", "libmp3lame", 24000, "mono"),
        "ogg.opus": _encode("ogg", "libopus", 48000, "mono"),
    }
