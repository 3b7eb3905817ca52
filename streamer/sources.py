"""Frame sources for live broadcasts: files, test tones and the demo programme, and live RTP/Opus input.

A source is pulled once per 20 ms frame by the broadcast's frame clock (:meth:`Source.pull`) and returns one of:

* a 960-sample ``int16`` mono 48 kHz array, which the broadcast encodes once;
* ``bytes``: an Opus packet ready to send unchanged (live pass-through), lasting what its TOC says;
* ``None``: nothing this time (a live input that stalled); the broadcast leaves a gap (marker bit, timestamp
  advanced) and asks again at the next frame.

:attr:`Source.finished` turns true when a finite source has nothing more; the broadcast then ends.

:class:`LiveRtpSource` is sans-I/O: the service feeds it the datagrams of a UDP port (what
``ffmpeg -re -i mic.wav -c:a libopus -f rtp rtp://HOST:PORT`` sends) and the frame clock pulls from it. Mono
20 ms Opus packets pass through untouched (no decode, no re-encode, no quality loss); any other packet (stereo,
10/40/60 ms) is decoded and re-framed into 20 ms PCM frames for the broadcast's encoder.

Failure semantics: file loading raises :class:`loa.codecs.CodecError` subclasses (``IngestError`` names the
file). :meth:`LiveRtpSource.feed` never raises for any bytes: what is not RTP/Opus is counted and dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from loa.codecs import Audio, CodecError, OpusDecoder, demo_programme, frames, load_audio, packet_samples
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.rtp import parse_rtp
from loa.protocol.rtptime import SeqUnwrapper

__all__ = [
    "FRAME_SAMPLES",
    "AudioSource",
    "Frame",
    "LiveRtpSource",
    "LiveStatistics",
    "Source",
    "ToneSource",
    "demo_source",
    "file_source",
]

FRAME_SAMPLES = 960
SAMPLE_RATE = 48_000

Frame = npt.NDArray[np.int16] | bytes


class Source(Protocol):
    """What a broadcast pulls its audio from, one frame at a time."""

    @property
    def finished(self) -> bool: ...

    def pull(self) -> Frame | None: ...

    def close(self) -> None: ...


class AudioSource:
    """Frames of a decoded programme (:class:`loa.codecs.Audio`), once or looping."""

    def __init__(self, audio: Audio, *, loop: bool = False) -> None:
        self.audio = audio
        self.loop = loop
        self._frames: Iterator[npt.NDArray[np.int16]] = frames(audio, 20)
        self._finished = int(audio.samples.shape[0]) == 0

    @property
    def finished(self) -> bool:
        return self._finished

    def pull(self) -> Frame | None:
        if self._finished:
            return None
        frame = next(self._frames, None)
        if frame is None and self.loop:
            self._frames = frames(self.audio, 20)
            frame = next(self._frames, None)
        if frame is None:
            self._finished = True
        return frame

    def close(self) -> None:
        self._finished = True


def file_source(path: str | os.PathLike[str], *, loop: bool = False, target_lufs: float | None = -16.0) -> AudioSource:
    """Any file ffmpeg can read, decoded, loudness-normalised and framed. Raises ``IngestError`` naming it."""
    return AudioSource(load_audio(path, target_lufs=target_lufs), loop=loop)


def demo_source(*, loop: bool = True) -> AudioSource:
    """The built-in line-up programme (:func:`loa.codecs.demo_programme`), looping by default."""
    return AudioSource(demo_programme(), loop=loop)


class ToneSource:
    """A continuous sine (phase kept across frames, so no clicks), for ``seconds`` or for ever."""

    def __init__(self, freq: float = 440.0, *, level_dbfs: float = -18.0, seconds: float | None = None) -> None:
        if not 0 < freq < SAMPLE_RATE / 2:
            raise ValueError(f"tone frequency must be between 0 and {SAMPLE_RATE // 2} Hz, not {freq!r}")
        if not level_dbfs <= -1.0:
            raise ValueError(f"tone level must be at most -1 dBFS, not {level_dbfs!r}")
        self.freq = freq
        self._amplitude = 32767.0 * 10.0 ** (level_dbfs / 20.0)
        self._left = None if seconds is None else max(1, math.ceil(seconds * SAMPLE_RATE / FRAME_SAMPLES))
        self._phase = 0.0
        self._step = 2.0 * math.pi * freq / SAMPLE_RATE
        self._ramp = np.arange(FRAME_SAMPLES, dtype=np.float64) * self._step

    @property
    def finished(self) -> bool:
        return self._left == 0

    def pull(self) -> Frame | None:
        if self._left is not None:
            if self._left == 0:
                return None
            self._left -= 1
        out: npt.NDArray[np.int16] = np.rint(self._amplitude * np.sin(self._phase + self._ramp)).astype(np.int16)
        self._phase = math.fmod(self._phase + FRAME_SAMPLES * self._step, 2.0 * math.pi)
        return out

    def close(self) -> None:
        self._left = 0


@dataclass(frozen=True, slots=True)
class LiveStatistics:
    received: int
    passed_through: int
    decoded: int
    dropped: int
    late: int
    underruns: int
    buffered: int


class LiveRtpSource:
    """Plain RTP/Opus arriving on a UDP port, re-packetised into the broadcast.

    It follows the newest SSRC it hears (a restarted sender takes over at once), keeps packets in sequence
    order, starts playing after ``prebuffer`` packets, and drops the oldest when more than ``max_buffer``
    wait (the sender's clock runs fast against ours). A packet missing when its turn comes while later ones
    wait is skipped. RTCP arriving on the same port is ignored.
    """

    def __init__(self, *, prebuffer: int = 3, max_buffer: int = 25) -> None:
        if not 1 <= prebuffer <= max_buffer:
            raise ValueError("need 1 <= prebuffer <= max_buffer")
        self._prebuffer = prebuffer
        self._max = max_buffer
        self._ssrc: int | None = None
        self._unwrap = SeqUnwrapper()
        self._buffer: dict[int, bytes] = {}
        self._next: int | None = None
        self._playing = False
        self._pcm = np.zeros(0, dtype=np.int16)
        self._decoder: OpusDecoder | None = None
        self._closed = False
        self.address: tuple[str, int] | None = None  # where the service listens for it
        self._received = self._passed = self._decoded = self._dropped = self._late = self._underruns = 0

    @property
    def finished(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._buffer.clear()
        if self._decoder is not None:
            self._decoder.close()

    def feed(self, datagram: bytes) -> None:
        """Take one datagram from the live port. Never raises; anything but RTP/Opus is counted as dropped."""
        if self._closed:
            return
        if len(datagram) >= 2 and 192 <= datagram[1] <= 223:
            return  # RTCP multiplexed on the port: sender reports, nothing to play
        try:
            packet = parse_rtp(datagram)
            packet_samples(packet.payload)
        except (RemoteProtocolError, CodecError):
            self._dropped += 1
            return
        self._received += 1
        if packet.ssrc != self._ssrc:
            self._ssrc = packet.ssrc
            self._unwrap = SeqUnwrapper()
            self._buffer.clear()
            self._next = None
            self._playing = False
        seq = self._unwrap.unwrap(packet.sequence)
        if seq in self._buffer or (self._next is not None and seq < self._next):
            self._late += 1  # a duplicate, or too late: its turn has passed
            return
        self._buffer[seq] = packet.payload
        if len(self._buffer) > self._max:
            for old in sorted(self._buffer)[: len(self._buffer) - self._max]:
                del self._buffer[old]
                self._dropped += 1
            self._next = min(self._buffer)

    def pull(self) -> Frame | None:
        if len(self._pcm) >= FRAME_SAMPLES:
            return self._take_pcm()
        payload = self._next_payload()
        if payload is None:
            return None
        if len(self._pcm) == 0 and packet_samples(payload) == FRAME_SAMPLES and not payload[0] & 0x04:
            self._passed += 1
            return payload  # mono, 20 ms: pass it through untouched
        if self._decoder is None:
            self._decoder = OpusDecoder()
        try:
            pcm = self._decoder.decode(payload)
        except CodecError:
            self._dropped += 1
            return None
        self._decoded += 1
        self._pcm = np.concatenate((self._pcm, pcm))
        return self._take_pcm() if len(self._pcm) >= FRAME_SAMPLES else None

    def _take_pcm(self) -> Frame:
        out, self._pcm = self._pcm[:FRAME_SAMPLES].copy(), self._pcm[FRAME_SAMPLES:]
        return out

    def _next_payload(self) -> bytes | None:
        buffer = self._buffer
        if not self._playing:
            if len(buffer) < self._prebuffer:
                return None
            self._playing = True
            self._next = min(buffer)
        if not buffer:
            self._playing = False
            self._underruns += 1
            return None
        assert self._next is not None
        payload = buffer.pop(self._next, None)
        if payload is None:  # lost or late: skip to the next packet that is here
            self._next = min(buffer)
            payload = buffer.pop(self._next)
            self._dropped += 1
        self._next += 1
        return payload

    def statistics(self) -> LiveStatistics:
        return LiveStatistics(self._received, self._passed, self._decoded, self._dropped, self._late,
                              self._underruns, len(self._buffer))
