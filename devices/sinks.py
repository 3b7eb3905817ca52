"""Where a device's output goes: frame sinks.

The playout hands every frame to a :class:`FrameSink` at the instant it is to be heard:
``on_frame(at, pcm, info)``, with ``at`` in seconds on the sink's timeline (the device clock, or the true
timeline of a simulation), ``pcm`` the 48 kHz mono ``int16`` samples (None when the sink does not decode) and
:class:`FrameInfo` saying what it is. A frame that starts before the previous one ended replaces the rest of it
(that is how a switch at a frame boundary cuts what was playing).

* :class:`CounterSink` - counts frames by kind; asks for no decoding (fleets of thousands of devices).
* :class:`WavRecorder` - writes what the speaker would emit to a 16-bit mono WAV file, silence included.
* :class:`SoundCardSink` - plays on the default sound card through the ``sounddevice`` package when it is
  installed (it is not a dependency of loa); :func:`open_sound_card` raises :class:`SinkError` otherwise.
"""

from __future__ import annotations

import importlib
import os
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "SAMPLE_RATE",
    "CounterSink",
    "FrameInfo",
    "FrameSink",
    "SinkError",
    "SoundCardSink",
    "WavRecorder",
    "open_sound_card",
]

SAMPLE_RATE = 48_000
Pcm = npt.NDArray[np.int16]


class SinkError(Exception):
    """A sink cannot be opened or written (message names the file or device)."""


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What a frame is.

    ``source``: ``"ip"`` (a live broadcast), ``"stored"`` (a prefetched programme played as a broadcast),
    ``"local"`` (the local programme as fallback or source), ``"fm"``, ``"line"``. ``kind``: ``"packet"`` (the
    packet itself), ``"fec"`` (rebuilt from the next packet's FEC), ``"plc"`` (concealed), ``"synth"`` (a
    simulated input). ``bid``/``ssrc``/``seq``/``rtp_ts`` identify broadcast frames (stored programmes: SSRC 0,
    packet index, sample position). ``server_at`` is the server time (ns) the frame was scheduled for;
    ``audible`` is false while the amplifier warms up or the output is muted.
    """

    source: str
    kind: str
    samples: int
    bid: int | None = None
    ssrc: int = 0
    seq: int = 0
    rtp_ts: int = 0
    server_at: int = 0
    audible: bool = True
    volume: int = 100


class FrameSink(Protocol):
    """The device's output. ``decode`` false: frames arrive with ``pcm`` None and nothing is decoded."""

    @property
    def decode(self) -> bool: ...

    def on_frame(self, at: float, pcm: Pcm | None, info: FrameInfo) -> None: ...

    def close(self) -> None: ...


class CounterSink:
    """Counts frames (by ``kind`` and ``source``) and samples; decodes nothing unless ``decode`` (then the
    frames are decoded, which costs what a real speaker costs, and dropped)."""

    def __init__(self, *, decode: bool = False) -> None:
        self.decode = decode
        self.kinds: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.samples = 0
        self.last_at: float | None = None

    def on_frame(self, at: float, pcm: Pcm | None, info: FrameInfo) -> None:
        self.kinds[info.kind] += 1
        self.sources[info.source] += 1
        self.samples += info.samples
        self.last_at = at

    def close(self) -> None:
        return None


_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


class WavRecorder:
    """A 48 kHz 16-bit mono WAV file of the output, placed by time: gaps are written as silence.

    The first frame's ``at`` is sample 0. Frames that are not audible are written as silence; with
    ``apply_volume`` the samples are scaled by the volume. The file is valid after :meth:`close` (the header
    is written last). Raises :class:`SinkError` naming the file when it cannot be created or written.
    """

    decode = True

    def __init__(self, path: str | os.PathLike[str], *, apply_volume: bool = False) -> None:
        self.path = os.fspath(path)
        self._apply_volume = apply_volume
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 - kept open for the recording's lifetime
            self._file.write(bytes(_WAV_HEADER.size))
        except OSError as exc:
            raise SinkError(f"cannot record to {self.path!r}: {exc.strerror or exc}") from None
        self._t0: float | None = None
        self._written = 0  # samples in the file
        self._closed = False
        self.frames = 0

    def on_frame(self, at: float, pcm: Pcm | None, info: FrameInfo) -> None:
        if self._closed:
            return
        if self._t0 is None:
            self._t0 = at
        start = round((at - self._t0) * SAMPLE_RATE)
        if start < 0:
            return  # earlier than the recording's start: nothing to place it on
        data = pcm if pcm is not None and info.audible else np.zeros(info.samples, dtype=np.int16)
        if self._apply_volume and info.volume != 100 and pcm is not None:
            data = (data.astype(np.int32) * info.volume // 100).astype(np.int16)
        try:
            if start > self._written:
                self._file.seek(self._written * 2 + _WAV_HEADER.size)
                self._file.write(bytes(2 * (start - self._written)))
            else:
                self._file.seek(start * 2 + _WAV_HEADER.size)
            self._file.write(data.astype("<i2", copy=False).tobytes())
        except OSError as exc:
            raise SinkError(f"cannot write {self.path!r}: {exc.strerror or exc}") from None
        self._written = max(self._written, start + len(data))
        self.frames += 1

    @property
    def seconds(self) -> float:
        return self._written / SAMPLE_RATE

    def close(self) -> None:
        """Write the header and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        size = self._written * 2
        try:
            self._file.seek(0)
            self._file.write(_WAV_HEADER.pack(
                b"RIFF", 36 + size, b"WAVE", b"fmt ", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16, b"data", size
            ))
            self._file.close()
        except OSError as exc:
            raise SinkError(f"cannot finish {self.path!r}: {exc.strerror or exc}") from None


class SoundCardSink:
    """Plays frames on the default output device through ``sounddevice`` (optional, not a dependency).

    Frames are written in arrival order; the device's own buffer absorbs the scheduling jitter of the host.
    """

    decode = True

    def __init__(self, module: Any) -> None:
        try:
            self._stream = module.OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16")
            self._stream.start()
        except Exception as exc:  # noqa: BLE001 - any failure of an optional library is one clear error
            raise SinkError(f"cannot open the sound card: {exc}") from None

    def on_frame(self, at: float, pcm: Pcm | None, info: FrameInfo) -> None:
        if pcm is None:
            return
        data = pcm if info.audible else np.zeros_like(pcm)
        self._stream.write(data.reshape(-1, 1))

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def open_sound_card() -> SoundCardSink:
    """A :class:`SoundCardSink`, or :class:`SinkError` when ``sounddevice`` is not installed or fails."""
    try:
        module = importlib.import_module("sounddevice")
    except ImportError:
        raise SinkError("no sound card support: the optional 'sounddevice' package is not installed") from None
    except OSError as exc:  # the package is there but PortAudio is not
        raise SinkError(f"no sound card support: {exc}") from None
    return SoundCardSink(module)
