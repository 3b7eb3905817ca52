"""Fuzz target ``ingest``: :func:`~loa.codecs.load_audio` (PyAV/ffmpeg) on a real file holding the input.

This is what an uploaded programme goes through first. ``max_seconds`` is 10 s here (the library allows an
hour) so that one input costs milliseconds, not minutes; the code path is the same. ffmpeg's C code is not
instrumented: the fuzzer is guided by loa's Python around it, and a crash inside ffmpeg still shows as a
crash of the process.

Accepted errors: :class:`~loa.codecs.IngestError`. Oracle: decoded audio is finite, 48 kHz mono, non-empty,
no longer than ``max_seconds``.
"""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np

from loa.bench.fuzz._common import scratch
from loa.codecs import SAMPLE_RATE, IngestError, load_audio, tone

MAX_LEN = 32768
MAX_SECONDS = 10.0
_FILE = scratch() / "upload"


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    _FILE.write_bytes(data)
    try:
        audio = load_audio(_FILE, max_seconds=MAX_SECONDS)
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
