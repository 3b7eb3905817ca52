"""Opus frames -> RTP packets, with the marker and rapid-synchronisation rules of sections 5.1-5.2.

One :class:`Packetizer` per RTP stream. It owns the stream's SSRC, sequence number and timestamp, and the
mapping between RTP timestamps and server time that both its RFC 6051 extensions and its sender reports
state: the first packet's timestamp corresponds to the server time read when it is packetized, and every
later timestamp to that instant plus the samples sent since (plus any gap declared with :meth:`mark_gap`).
No I/O: the server-time source and the random source are injected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from loa.protocol.rtcp import SenderReport
from loa.protocol.rtp import (
    MAX_DATAGRAM,
    NTP64_EXT_SIZE,
    OPUS_PAYLOAD_TYPE,
    RAPID_SYNC_PACKETS,
    RTP_HEADER_SIZE,
    write_opus_rtp,
)
from loa.protocol.rtptime import ns_to_ntp64, ts_add

__all__ = ["CLOCK_RATE", "Packetizer", "RandomBits"]

CLOCK_RATE = 48_000
_NS = 1_000_000_000


class RandomBits(Protocol):
    def getrandbits(self, k: int, /) -> int: ...


class Packetizer:
    """Builds the RTP packets of one stream.

    The first packet, and the first after :meth:`mark_gap`, has the marker bit set; it and the next
    ``rapid_sync - 1`` packets carry the ntp-64 header extension. Raises ``ValueError`` for an empty or
    oversized payload or a sample count that is not positive; a failed call changes no state.
    """

    def __init__(
        self,
        ssrc: int,
        *,
        initial_seq: int,
        initial_ts: int,
        server_time: Callable[[], int],
        frame_samples: int = 960,
        payload_type: int = OPUS_PAYLOAD_TYPE,
        rapid_sync: int = RAPID_SYNC_PACKETS,
    ) -> None:
        if not (0 <= ssrc <= 0xFFFFFFFF and 0 <= initial_seq <= 0xFFFF and 0 <= initial_ts <= 0xFFFFFFFF):
            raise ValueError("SSRC and initial timestamp must be 32-bit, the initial sequence number 16-bit")
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.frame_samples = frame_samples
        self._server_time = server_time
        self._rapid_sync = rapid_sync
        self._seq = initial_seq
        self._ts = initial_ts
        self._ref_ns: int | None = None  # server time of the first packet's first sample
        self._samples = 0  # samples from the first packet's first sample to the next packet's
        self._marker_pending = True
        self._sync_left = rapid_sync
        self._buf = bytearray(MAX_DATAGRAM)
        self.packet_count = 0
        self.octet_count = 0

    @classmethod
    def random_start(
        cls, rng: RandomBits, server_time: Callable[[], int], *, ssrc: int | None = None, frame_samples: int = 960
    ) -> Packetizer:
        """A packetizer with a random SSRC (unless given), initial sequence number and timestamp from ``rng``."""
        return cls(
            rng.getrandbits(32) if ssrc is None else ssrc,
            initial_seq=rng.getrandbits(16),
            initial_ts=rng.getrandbits(32),
            server_time=server_time,
            frame_samples=frame_samples,
        )

    @property
    def next_sequence(self) -> int:
        return self._seq

    @property
    def next_timestamp(self) -> int:
        return self._ts

    @property
    def left(self) -> int:
        """Packets that can still be sent before the sequence number wraps from 65535 to 0."""
        return 0x10000 - self._seq if self._seq or not self.packet_count else 0

    def server_time_of(self, samples_since_start: int) -> int:
        """Server time (ns) of the sample ``samples_since_start`` after the first packet's first sample."""
        if self._ref_ns is None:
            raise ValueError("no packet has been sent yet")
        return self._ref_ns + samples_since_start * _NS // CLOCK_RATE

    def mark_gap(self, at_ns: int | None = None) -> None:
        """Declare a discontinuity (a resumption after preemption): the next packet carries the marker bit and
        starts another run of rapid-sync extensions, and its timestamp is advanced to server time ``at_ns``
        (default: now) so that the timeline stays the same. Does nothing to the timestamp before the first
        packet or if ``at_ns`` is not later than the running timeline."""
        self._marker_pending = True
        self._sync_left = self._rapid_sync
        if self._ref_ns is None:
            return
        now = self._server_time() if at_ns is None else at_ns
        target = (now - self._ref_ns) * CLOCK_RATE // _NS
        if target > self._samples:
            self._ts = ts_add(self._ts, target - self._samples)
            self._samples = target

    def packetize_into(self, buf: bytearray | memoryview, payload: bytes, samples: int | None = None) -> int:
        """Write the next packet (carrying ``payload``, lasting ``samples``, default ``frame_samples``) into
        ``buf``; return its length. Advances the sequence number by 1 and the timestamp by ``samples``."""
        samples = self.frame_samples if samples is None else samples
        if samples <= 0:
            raise ValueError("a frame must last at least one sample")
        if not payload or len(payload) > MAX_DATAGRAM - RTP_HEADER_SIZE - NTP64_EXT_SIZE - 14:
            raise ValueError(f"Opus payload of {len(payload)} bytes does not fit a datagram")
        ref_ns = self._server_time() if self._ref_ns is None else self._ref_ns
        ntp = None
        if self._sync_left > 0:
            ntp = ns_to_ntp64(ref_ns + self._samples * _NS // CLOCK_RATE)
        n = write_opus_rtp(
            buf,
            sequence=self._seq,
            timestamp=self._ts,
            ssrc=self.ssrc,
            payload=payload,
            marker=self._marker_pending,
            ntp64=ntp,
            payload_type=self.payload_type,
        )
        self._ref_ns = ref_ns
        self._marker_pending = False
        self._sync_left = max(0, self._sync_left - 1)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = ts_add(self._ts, samples)
        self._samples += samples
        self.packet_count = (self.packet_count + 1) & 0xFFFFFFFF
        self.octet_count = (self.octet_count + len(payload)) & 0xFFFFFFFF
        return n

    def packetize(self, payload: bytes, samples: int | None = None) -> bytes:
        """As :meth:`packetize_into`, returning the packet as new bytes."""
        n = self.packetize_into(self._buf, payload, samples)
        return bytes(self._buf[:n])

    def sender_report(self, now_ns: int | None = None) -> SenderReport:
        """An RTCP SR for server time ``now_ns`` (default: now) on this stream's timeline (RFC 3550 6.4.1).

        Its NTP timestamp is the exact server time of its RTP timestamp (the sample at or just before
        ``now_ns``), so both name the same instant.

        Raises ``ValueError`` before the first packet: there is no timeline yet.
        """
        if self._ref_ns is None:
            raise ValueError("no packet has been sent yet")
        now = self._server_time() if now_ns is None else now_ns
        samples = (now - self._ref_ns) * CLOCK_RATE // _NS
        rtp_ts = ts_add(self._ts, samples - self._samples)
        return SenderReport(
            ssrc=self.ssrc,
            ntp=ns_to_ntp64(self.server_time_of(samples)),
            rtp_timestamp=rtp_ts,
            packet_count=self.packet_count,
            octet_count=self.octet_count,
        )
