"""One live broadcast's media: frame clock, encoder, RTP stream(s), SRTP, retransmission ring, key rotation.

Sans-I/O. :meth:`LiveBroadcast.produce` is called when the frame clock says (:meth:`next_frame_time`, on the
caller's monotonic clock) and returns the datagrams every destination receives: normally one SRTP packet,
plus an SRTCP ``SR, SDES`` compound right after the first packet and then every second, and ``SR, SDES, BYE``
when a stream ends. Each packet is encoded once, packetised once and protected once.

Timing follows PROTOCOL.md 5.1.1 exactly: frame *k* is due at ``start + samples_before_k / 48 kHz`` (no drift,
a late call catches up without slipping the schedule) and its RTP timestamp stands for the server time
``server_start + samples_before_k / 48 kHz``, which is what the RFC 6051 extensions and sender reports state.
A source that has nothing for a frame leaves a gap: the next packet has the marker bit and its timestamp is
advanced by the elapsed time. For alerts, frames due before ``audio_from`` are encoded silence (pre-roll).

Key rotation (section 5.4): :meth:`begin_rotation` draws a new SSRC and key; the caller tells the members and
reports their acknowledgements (:meth:`rotation_acked`); the first frame after every awaited member acked, or after
its grace (``ROTATE_GRACE``; before a wrap, up to the wrap), goes out on the new stream (marker bit, rapid-sync
extensions, continuous timeline), after the old stream's closing ``SR, SDES, BYE``. The old stream's packets stay
available for NACKs for 2 s. A stream's sequence number never wraps under its key (section 5.3): once no more than
``WRAP_MARGIN`` packets are left before it would, :attr:`needs_rotation` tells the caller to rotate, and a pending
rotation switches at the latest on the packet that would wrap.

Failure semantics: codec errors from the source or encoder propagate from :meth:`produce` with no packet sent
for that frame (the frame clock has advanced; the caller may stop the broadcast).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from loa.codecs import OpusEncoder, packet_samples
from loa.protocol.rtcp import Bye, RtcpPacket, SdesChunk, SourceDescription, build_rtcp
from loa.protocol.srtp import SRTP_KEY_SIZE, StreamProtector
from loa.streamer.destinations import Destinations
from loa.streamer.packetizer import CLOCK_RATE, Packetizer
from loa.streamer.retransmit import RTX_BUFFER_S, RetransmitRing
from loa.streamer.settings import EncoderSettings
from loa.streamer.sources import FRAME_SAMPLES, Source

__all__ = ["ROTATE_GRACE_S", "WRAP_MARGIN", "LiveBroadcast", "Member", "Stream"]

ROTATE_GRACE_S = 2.0
# Packets left before a stream's sequence number wraps at which its key rotates (section 5.3): more than
# ROTATE_GRACE holds even of 2.5 ms Opus packets, so the switch comes first.
WRAP_MARGIN = 1024
SR_INTERVAL_NS = 1_000_000_000
_NS = 1_000_000_000
_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_SILENCE.flags.writeable = False


@dataclass(slots=True)
class Member:
    """What one member device has been told about this broadcast."""

    zone: str
    join_id: int | None = None
    join_acked: bool = False
    gen: int = 0  # key generation it was given (by join or rotate)
    rotate_id: int | None = None
    group: str | None = None


@dataclass(slots=True)
class Stream:
    """One SSRC under one key."""

    gen: int
    ssrc: int
    key: bytes
    packetizer: Packetizer
    protector: StreamProtector
    ring: RetransmitRing
    sdes: SourceDescription
    next_sr_ns: int = 0
    packets: int = 0

    @property
    def left(self) -> int:
        """Packets that can still be sent before the sequence number wraps (the SRTP rollover counter would
        become 1)."""
        return self.packetizer.left


@dataclass(slots=True)
class _Retired:
    ring: RetransmitRing
    until: float


@dataclass(slots=True)
class _Rotation:
    stream: Stream
    grace_until: float
    awaiting: set[bytes] = field(default_factory=set)


class LiveBroadcast:
    """The media side of one live stream or alert; membership bookkeeping is kept here, messages by the core."""

    def __init__(
        self,
        bid: int,
        source: Source,
        *,
        zones: tuple[str, ...],
        cls: int,
        lvl: int,
        policy: str,
        start: float,
        server_start_ns: int,
        name: str = "",
        delay_ms: int = 500,
        audio_from: float | None = None,
        encoder: EncoderSettings | None = None,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.bid = bid
        self.source = source
        self.zones = zones
        self.cls, self.lvl, self.policy = cls, lvl, policy
        self.name = name
        self.delay_ms = delay_ms
        self.start = start
        self.server_start_ns = server_start_ns
        self.audio_from = start if audio_from is None else audio_from
        self.members: dict[bytes, Member] = {}
        self.destinations = Destinations()
        self.groups: dict[str, int] = {}  # multicast group -> members served by it
        self._encoder_settings = encoder or EncoderSettings()
        self._encoder: OpusEncoder | None = None
        self._rng = rng or random.SystemRandom()
        self._random_bytes = random_bytes
        self._samples = 0
        self._frame_ns = server_start_ns
        self._gap = False
        self._stop_at: float | None = None
        self.ended = False
        self.frames = self.silent_frames = self.gaps = self.late_frames = 0
        self.stream = self._new_stream(1, avoid=())
        self._rotation: _Rotation | None = None
        self._retired: dict[int, _Retired] = {}

    # -- identity and keys -------------------------------------------------------------------------------------

    @property
    def latest(self) -> Stream:
        """The stream members should hold the key of: the pending one during a rotation, else the current."""
        return self._rotation.stream if self._rotation is not None else self.stream

    @property
    def rotating(self) -> bool:
        return self._rotation is not None

    @property
    def needs_rotation(self) -> bool:
        """True when the current stream is within ``WRAP_MARGIN`` packets of wrapping and no rotation is pending:
        the caller should rotate (:meth:`begin_rotation` and tell the members) before the next frame."""
        return self._rotation is None and not self.ended and self.stream.left <= WRAP_MARGIN

    def _new_stream(self, gen: int, *, avoid: tuple[int, ...]) -> Stream:
        key = self._random_bytes(SRTP_KEY_SIZE)
        ssrc = self._rng.getrandbits(32)
        while ssrc == 0 or ssrc in avoid:
            ssrc = self._rng.getrandbits(32)
        packetizer = Packetizer.random_start(self._rng, self._server_time, ssrc=ssrc)
        while packetizer.left <= WRAP_MARGIN:  # it would rotate at once (section 5.3.2)
            packetizer = Packetizer.random_start(self._rng, self._server_time, ssrc=ssrc)
        cname = f"loa-{self._random_bytes(6).hex()}".encode("ascii")
        return Stream(gen, ssrc, key, packetizer, StreamProtector(key), RetransmitRing(),
                      SourceDescription((SdesChunk(ssrc, ((1, cname),)),)))

    def _server_time(self) -> int:
        return self._frame_ns

    def ring_for(self, ssrc: int, now: float) -> RetransmitRing | None:
        """The retransmission ring of the stream ``ssrc`` (current, or retired less than 2 s ago)."""
        if ssrc == self.stream.ssrc:
            return self.stream.ring
        retired = self._retired.get(ssrc)
        if retired is None or now > retired.until:
            return None
        return retired.ring

    def ssrcs(self) -> list[int]:
        return [self.stream.ssrc, *self._retired]

    # -- rotation ----------------------------------------------------------------------------------------------

    def begin_rotation(self, now: float, *, grace_s: float = ROTATE_GRACE_S) -> Stream:
        """Draw a new SSRC and key. The switch waits for the awaited acknowledgements ``grace_s`` at most
        (``math.inf``: up to the packet that would wrap); replacing a rotation still pending keeps the earlier of
        the two deadlines."""
        grace = now + grace_s
        if self._rotation is not None:
            grace = min(grace, self._rotation.grace_until)
        stream = self._new_stream(self.latest.gen + 1, avoid=(self.latest.ssrc, *self.ssrcs()))
        self._rotation = _Rotation(stream, grace)
        return self._rotation.stream

    def await_rotation_ack(self, device: bytes) -> None:
        if self._rotation is not None:
            self._rotation.awaiting.add(device)

    def rotation_acked(self, device: bytes) -> None:
        """``device`` acknowledged the pending rotation, or went offline (it no longer holds it up)."""
        if self._rotation is not None:
            self._rotation.awaiting.discard(device)

    def _switch(self, now: float, out: list[bytes]) -> None:
        rotation = self._rotation
        assert rotation is not None
        old = self.stream
        if old.packets:
            out.append(self._report(old, (Bye((old.ssrc,)),)))
        self._retired[old.ssrc] = _Retired(old.ring, now + RTX_BUFFER_S)
        self.stream = rotation.stream
        self._rotation = None

    # -- the frame clock ---------------------------------------------------------------------------------------

    def next_frame_time(self) -> float | None:
        """When :meth:`produce` is next due (monotonic seconds), or None once the broadcast has ended."""
        if self.ended:
            return None
        if self._stop_at is not None:
            return self._stop_at
        return self.start + self._samples / CLOCK_RATE

    def stop(self, now: float) -> None:
        """End at the next :meth:`produce`, which sends the closing ``SR, SDES, BYE``."""
        if not self.ended and self._stop_at is None:
            self._stop_at = now

    def produce(self, now: float) -> list[bytes]:
        """The datagrams of the frame that is due (see the module docstring). Empty for a gap or once ended."""
        if self.ended:
            return []
        due = self.start + self._samples / CLOCK_RATE
        self._frame_ns = self.server_start_ns + self._samples * _NS // CLOCK_RATE
        out: list[bytes] = []
        if self._stop_at is not None:
            self._end(out)
            return out
        for ssrc in [s for s, r in self._retired.items() if now > r.until]:
            del self._retired[ssrc]
        rotation = self._rotation
        if rotation is not None and (not rotation.awaiting or now >= rotation.grace_until or not self.stream.left):
            self._switch(now, out)
        if now - due > 0.002:
            self.late_frames += 1
        frame = _SILENCE if due < self.audio_from else self.source.pull()
        if frame is None:
            if self.source.finished:
                self._end(out)
                return out
            self._samples += FRAME_SAMPLES
            self._gap = True
            self.gaps += 1
            return out
        if isinstance(frame, bytes):
            payload, samples = frame, packet_samples(frame)
        else:
            if self._encoder is None:
                self._encoder = self._encoder_settings.encoder()
            payload, samples = self._encoder.encode(frame), FRAME_SAMPLES
            if frame is _SILENCE:
                self.silent_frames += 1
        stream = self.stream
        packetizer = stream.packetizer
        if self._gap:
            packetizer.mark_gap(self._frame_ns)
            self._gap = False
        seq = packetizer.next_sequence
        packet = stream.protector.protect(packetizer.packetize(payload, samples))
        stream.ring.store(seq, packet, now)
        stream.packets += 1
        out.append(packet)
        if self._frame_ns >= stream.next_sr_ns:
            out.append(self._report(stream))
            stream.next_sr_ns = self._frame_ns + SR_INTERVAL_NS
        self._samples += samples
        self.frames += 1
        return out

    def _report(self, stream: Stream, extra: tuple[RtcpPacket, ...] = ()) -> bytes:
        report = stream.packetizer.sender_report(self._frame_ns)
        return stream.protector.protect_rtcp(build_rtcp([report, stream.sdes, *extra]))

    def _end(self, out: list[bytes]) -> None:
        if self.stream.packets:
            out.append(self._report(self.stream, (Bye((self.stream.ssrc,)),)))
        self.ended = True
        self._rotation = None
        self.source.close()
        if self._encoder is not None:
            self._encoder.close()
