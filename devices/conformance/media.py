"""The kit's media: test audio, an RTP/SRTP stream it can bend on purpose, and an Ogg Opus programme.

:class:`KitStream` builds the packets of one broadcast exactly as sections 5.1-5.3 say (marker and ntp-64
extension on the first 5 packets, the RTP timestamp mapped to server time, SRTP under the 30-byte group key),
and keeps what it sent for NACK answers (5.5.3). It lets a case choose the initial sequence number and
timestamp (to test wrap-around), and hands packets back to the case, which may drop, delay, reorder, corrupt
or replay them before they go out.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loa.codecs import OpusEncoder, write_ogg_opus
from loa.protocol.control import Join, Rotate
from loa.protocol.rtcp import SdesChunk, SenderReport, SourceDescription, build_rtcp
from loa.protocol.rtp import write_opus_rtp
from loa.protocol.rtptime import ns_to_ntp64, seq_add, ts_add
from loa.protocol.srtp import StreamProtector

__all__ = ["FRAME_NS", "FRAME_SAMPLES", "KitStream", "Packet", "ogg_programme", "tone_payloads"]

FRAME_SAMPLES = 960
FRAME_NS = 20_000_000
CLOCK_RATE = 48_000
NS = 1_000_000_000


@functools.cache
def tone_payloads(count: int = 100, freq: float = 440.0) -> tuple[bytes, ...]:
    """``count`` Opus packets (20 ms, in-band FEC on) of a steady tone; cached per process."""
    encoder = OpusEncoder(frame_ms=20, bitrate=32_000, application="voip", fec=True, packet_loss_percent=10)
    try:
        n = np.arange(count * FRAME_SAMPLES, dtype=np.float64)
        pcm = (np.sin(2 * np.pi * freq * n / CLOCK_RATE) * 8000).astype(np.int16)
        return tuple(encoder.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(count))
    finally:
        encoder.close()


@functools.cache
def ogg_programme(frames: int = 50, freq: float = 660.0) -> bytes:
    """A valid Ogg Opus programme (section 5.8) of ``frames`` 20 ms frames, as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "programme.opus"
        write_ogg_opus(path, tone_payloads(frames, freq), frame_ms=20)
        return path.read_bytes()


@dataclass(slots=True)
class Packet:
    """One packet of a stream as built: its index in the stream, sequence number, timestamp and SRTP bytes."""

    index: int
    seq: int
    ts: int
    data: bytes
    server_ns: int  # the server time of its timestamp (before the playout delay)


@dataclass
class KitStream:
    """One broadcast's RTP stream (see the module docstring). ``server_time`` returns server time in ns."""

    bid: int
    server_time: Callable[[], int]
    cls: int = 0
    lvl: int = 0
    policy: str = "resume"
    delay_ms: int = 200
    zone: str = "26734"
    ssrc: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    first_seq: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))
    first_ts: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    key: bytes = field(default_factory=lambda: os.urandom(30))
    payloads: tuple[bytes, ...] = ()
    sent: dict[int, Packet] = field(default_factory=dict)  # by sequence number, for NACK answers
    built: int = 0
    ref_ns: int | None = None
    _samples: int = 0
    _sync_left: int = 5
    _marker: bool = True
    _protector: StreamProtector | None = None
    _sr_index: int = 0
    bases: dict[int, int] = field(default_factory=dict)  # SSRC -> RTP timestamp of sample 0 of the timeline

    def __post_init__(self) -> None:
        if not self.payloads:
            self.payloads = tone_payloads()
        self._protector = StreamProtector(self.key)
        self.bases[self.ssrc] = self.first_ts

    def join(self, **changes: object) -> Join:
        fields: dict[str, object] = {"bid": self.bid, "ssrc": self.ssrc, "key": self.key, "cls": self.cls,
                                     "lvl": self.lvl, "policy": self.policy, "zone": self.zone,
                                     "delay_ms": self.delay_ms}
        fields.update(changes)
        return Join(**fields)  # type: ignore[arg-type]

    def rotate(self) -> Rotate:
        """Move to a new SSRC and key on the same timeline (section 5.4); the caller sends the ``rotate``."""
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.key = os.urandom(30)
        self.first_ts = (int.from_bytes(os.urandom(4), "big") - self._samples) & 0xFFFFFFFF  # a fresh random start
        self.bases[self.ssrc] = self.first_ts
        self._protector = StreamProtector(self.key)
        self._marker, self._sync_left = True, 5
        return Rotate(bid=self.bid, ssrc=self.ssrc, key=self.key)

    def gap(self) -> None:
        """A pause ends now: marker, rapid sync again, timestamp advanced to the elapsed server time."""
        self._marker, self._sync_left = True, 5
        if self.ref_ns is not None:
            target = (self.server_time() - self.ref_ns) * CLOCK_RATE // NS
            self._samples = max(self._samples, target)

    @property
    def next_seq(self) -> int:
        return seq_add(self.first_seq, self.built)

    def play_ns(self, ts_samples_since_first: int) -> int:
        """Server time at which the sample ``ts_samples_since_first`` after the first must be played."""
        assert self.ref_ns is not None
        return self.ref_ns + ts_samples_since_first * NS // CLOCK_RATE + self.delay_ms * 1_000_000

    def next_packet(self) -> Packet:
        """Build (and protect, once) the next packet."""
        assert self._protector is not None
        if self.ref_ns is None:
            self.ref_ns = self.server_time()
        seq = self.next_seq
        ts = ts_add(self.first_ts, self._samples)
        server_ns = self.ref_ns + self._samples * NS // CLOCK_RATE
        ntp = ns_to_ntp64(server_ns) if self._sync_left > 0 else None
        buf = bytearray(1200)
        payload = self.payloads[self.built % len(self.payloads)]
        n = write_opus_rtp(buf, sequence=seq, timestamp=ts, ssrc=self.ssrc, payload=payload, marker=self._marker,
                           ntp64=ntp)
        data = self._protector.protect(bytes(buf[:n]))
        packet = Packet(self.built, seq, ts, data, server_ns)
        self._marker = False
        self._sync_left = max(0, self._sync_left - 1)
        self._samples += FRAME_SAMPLES
        self.built += 1
        self.sent[seq] = packet
        if len(self.sent) > 200:  # 4 s of 20 ms packets: more than RTX_BUFFER
            self.sent.pop(next(iter(self.sent)))
        return packet

    def expected_ns(self, ssrc: int, rtp_ts: int) -> int | None:
        """Server time at which the frame with timestamp ``rtp_ts`` of ``ssrc`` must start (section 5.6)."""
        base = self.bases.get(ssrc)
        if base is None or self.ref_ns is None:
            return None
        return self.play_ns((rtp_ts - base) & 0xFFFFFFFF)

    def sender_report(self) -> bytes:
        """SRTCP ``SR, SDES`` for now (section 5.5.1)."""
        assert self._protector is not None
        assert self.ref_ns is not None
        now = self.server_time()
        samples = (now - self.ref_ns) * CLOCK_RATE // NS
        report = SenderReport(ssrc=self.ssrc, ntp=ns_to_ntp64(self.ref_ns + samples * NS // CLOCK_RATE),
                              rtp_timestamp=ts_add(self.first_ts, samples), packet_count=self.built & 0xFFFFFFFF,
                              octet_count=0)
        sdes = SourceDescription((SdesChunk(self.ssrc, ((1, b"loa-c0nf0rmance"),)),))
        self._sr_index += 1
        return self._protector.protect_rtcp(build_rtcp([report, sdes]))
