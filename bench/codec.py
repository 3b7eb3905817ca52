"""`loa bench codec`: Opus encode/decode cost per frame, ours (opuslib/libopus) beside PyAV's libopus.

For each frame duration (10, 20, 40, 60 ms) the same audio (the built-in demo programme, repeated to
``--seconds``) is encoded frame by frame with :class:`loa.codecs.OpusEncoder` and with PyAV's ``libopus``
encoder at the same bitrate, complexity and VBR mode (constrained VBR, libopus' default; ffmpeg's default
is unconstrained, which would compare different work), then our packets are decoded by
:class:`loa.codecs.OpusDecoder` and by PyAV's ``libopus`` decoder. Each side includes the conversion the
caller needs: numpy frame in, ``bytes`` out for encoding; ``bytes`` in, numpy array out for decoding.

Runs are interleaved (ours, PyAV, alternating which goes first) and repeated ``--repeat`` times after one
warm-up pass; the metric is the median microseconds per frame, with ``_spread_pct`` = (max - min) / median.
Wall time (``perf_counter_ns``) with the garbage collector paused during a timed pass.

``ratio_vs_pyav`` = PyAV's encode cost / ours at 20 ms (> 1: ours is cheaper). Caveat printed in ``env``:
PyAV wheels bundle their own libopus (``env.pyav_libopus``), often a different version from the system
one opuslib loads (``env.libopus``), so the ratio compares bindings *and* library versions.
"""

from __future__ import annotations

import ctypes
import gc
import glob
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import av
import click
import numpy as np
import numpy.typing as npt

from loa.bench._report import emit, environment
from loa.codecs import (
    FRAME_DURATIONS_MS,
    SAMPLE_RATE,
    OpusDecoder,
    OpusEncoder,
    demo_programme,
    frames,
    libopus_version,
)

Frame = npt.NDArray[np.int16]


def _source(seconds: float) -> Frame:
    programme = demo_programme().samples
    want = max(1, round(seconds * SAMPLE_RATE))
    return np.resize(programme, want).astype(np.int16)


def _timed(prepare: Callable[[], Callable[[], int]]) -> float:
    """Prepare a pass (codec state, untimed), run it with the GC paused; return microseconds per frame."""
    run = prepare()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        count = run()
        elapsed = time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / 1000 / max(count, 1)


class _Case:
    """Everything measured for one frame duration. Each ``*_encode``/``*_decode`` method prepares fresh
    codec state (not timed) and returns the pass to time, which returns its frame count."""

    def __init__(self, pcm: Frame, frame_ms: int, bitrate: int, complexity: int) -> None:
        self.frame_ms = frame_ms
        self.bitrate = bitrate
        self.complexity = complexity
        self.frames = [np.ascontiguousarray(f) for f in frames(pcm, frame_ms)]
        self.samples = self.frames[0].shape[0]
        self.encoder = OpusEncoder(frame_ms=frame_ms, bitrate=bitrate, complexity=complexity)
        self.packets = [self.encoder.encode(f) for f in self.frames]
        self.pyav_bytes = 0
        self.pyav_packets = 0

    def ours_encode(self) -> Callable[[], int]:
        self.encoder.reset()
        encode, pcm = self.encoder.encode, self.frames

        def run() -> int:
            for frame in pcm:
                encode(frame)
            return len(pcm)
        return run

    def pyav_encode(self) -> Callable[[], int]:
        ctx = _pyav_encoder(self.frame_ms, self.bitrate, self.complexity)
        ctx.open()
        from_ndarray, pcm, step = av.AudioFrame.from_ndarray, self.frames, self.samples

        def run() -> int:
            pts, size, count = 0, 0, 0
            for frame in pcm:
                af = from_ndarray(frame.reshape(1, -1), format="s16", layout="mono")
                af.sample_rate = SAMPLE_RATE
                af.pts = pts
                pts += step
                for packet in ctx.encode(af):
                    size += len(bytes(packet))
                    count += 1
            self.pyav_bytes, self.pyav_packets = size, count
            return len(pcm)
        return run

    def ours_decode(self) -> Callable[[], int]:
        decode, packets = OpusDecoder().decode, self.packets

        def run() -> int:
            for packet in packets:
                decode(packet)
            return len(packets)
        return run

    def pyav_decode(self) -> Callable[[], int]:
        ctx = av.CodecContext.create("libopus", "r")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        ctx.open()
        packets, make = self.packets, av.Packet

        def run() -> int:
            for packet in packets:
                for frame in ctx.decode(make(packet)):
                    frame.to_ndarray()
            return len(packets)
        return run


def _pyav_encoder(frame_ms: int, bitrate: int, complexity: int) -> Any:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.bit_rate = bitrate
    ctx.options = {"frame_duration": str(frame_ms), "application": "audio", "vbr": "constrained",
                   "compression_level": str(complexity)}
    return ctx


def _pyav_libopus() -> str | None:
    """The version of the libopus bundled with the PyAV wheel (already loaded by PyAV), if identifiable."""
    libs = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libopus*"))):
        try:
            get_version = ctypes.CDLL(path).opus_get_version_string
        except (OSError, AttributeError):
            continue
        get_version.restype = ctypes.c_char_p
        return bytes(get_version()).decode("ascii", "replace")
    return None


@click.command("codec")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--seconds", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="Seconds of audio per measurement.")
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed passes per measurement (median and spread reported).")
@click.option("--bitrate", type=click.IntRange(6000, 510000), default=32000, show_default=True)
@click.option("--complexity", type=click.IntRange(0, 10), default=10, show_default=True)
def codec(as_json: bool, seconds: float, repeat: int, bitrate: int, complexity: int) -> None:
    """Opus encode/decode microseconds per frame, ours beside PyAV's libopus, for 10/20/40/60 ms frames."""
    pcm = _source(seconds)
    cases = [_Case(pcm, ms, bitrate, complexity) for ms in FRAME_DURATIONS_MS]
    ops = ("encode", "pyav_encode", "decode", "pyav_decode")
    results: dict[str, list[float]] = {f"{op}_us_{c.frame_ms}ms": [] for c in cases for op in ops}
    try:
        for case in cases:  # warm-up: caches, lazy imports, PyAV codec registry; also checks PyAV works
            for prepare in (case.ours_encode, case.pyav_encode, case.ours_decode, case.pyav_decode):
                prepare()()
    except (av.FFmpegError, ValueError) as exc:  # e.g. a PyAV build without libopus
        raise click.ClickException(f"PyAV's libopus cannot be benchmarked here: {exc}") from exc
    for r in range(repeat):
        for case in cases:
            pairs = [(("encode", case.ours_encode), ("pyav_encode", case.pyav_encode)),
                     (("decode", case.ours_decode), ("pyav_decode", case.pyav_decode))]
            for pair in pairs:
                for op, run in (pair if r % 2 == 0 else pair[::-1]):
                    results[f"{op}_us_{case.frame_ms}ms"].append(_timed(run))
    metrics: dict[str, float] = {}
    for key, values in results.items():
        median = statistics.median(values)
        metrics[key] = round(median, 2)
        metrics[key.replace("_us_", "_spread_pct_")] = round(100.0 * (max(values) - min(values)) / median, 1)
    for case in cases:
        metrics[f"bytes_per_packet_{case.frame_ms}ms"] = round(sum(map(len, case.packets)) / len(case.packets), 1)
        metrics[f"pyav_bytes_per_packet_{case.frame_ms}ms"] = round(case.pyav_bytes / max(case.pyav_packets, 1), 1)
    metrics["ratio_vs_pyav"] = round(metrics["pyav_encode_us_20ms"] / metrics["encode_us_20ms"], 3)
    metrics["decode_ratio_vs_pyav"] = round(metrics["pyav_decode_us_20ms"] / metrics["decode_us_20ms"], 3)
    for case in cases:
        case.encoder.close()
    env = environment(libopus=libopus_version(), pyav=av.__version__, pyav_libopus=_pyav_libopus(),
                      libavcodec=".".join(map(str, av.library_versions["libavcodec"])),
                      seconds=seconds, repeat=repeat, bitrate=bitrate, complexity=complexity)
    emit("codec", metrics, as_json=as_json, env=env, human=_human(metrics, env))


def _human(metrics: dict[str, float], env: dict[str, Any]) -> str:
    lines = [(f"codec: Opus, {env['bitrate']} b/s, complexity {env['complexity']}, {env['seconds']:g} s x "
              f"{env['repeat']} (median us/frame, spread %)"),
             f"  ours: {env['libopus']}   PyAV {env['pyav']}: {env['pyav_libopus'] or 'libopus ?'}",
             "  frame   encode        pyav encode   decode        pyav decode   bytes/pkt (ours/pyav)"]
    for ms in FRAME_DURATIONS_MS:
        cells = [f"{metrics[f'{op}_us_{ms}ms']:8.1f} {metrics[f'{op}_spread_pct_{ms}ms']:3.0f}%"
                 for op in ("encode", "pyav_encode", "decode", "pyav_decode")]
        sizes = f"{metrics[f'bytes_per_packet_{ms}ms']:.0f}/{metrics[f'pyav_bytes_per_packet_{ms}ms']:.0f}"
        lines.append(f"  {ms:3d} ms " + "  ".join(cells) + f"  {sizes}")
    lines.append(f"  ratio_vs_pyav (PyAV encode / ours, 20 ms): {metrics['ratio_vs_pyav']:.2f}   "
                 f"decode: {metrics['decode_ratio_vs_pyav']:.2f}")
    return "\n".join(lines)
