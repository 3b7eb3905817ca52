"""A joined live broadcast at a device (PROTOCOL.md sections 5.1-5.6), sans-I/O.

:class:`LiveStream` receives the SRTP packets and SRTCP reports of one broadcast and turns them into frames
placed on the device clock:

* one *track* per SSRC the broadcast used (the joined one, then one per ``rotate``): its SRTP receiver, its
  RTP timestamp <-> server time mapping (RFC 6051 extension or sender report), its jitter buffer, its NACKs;
  an old key is kept until the new SSRC's first packet authenticates or 10 s pass (section 5.4), and an old
  track's buffered frames still play until the new one's first frame;
* frame *k* plays at ``ntp_ref + (T_k - T_ref) / 48 kHz + delay_ms`` server time, converted by the clock
  estimate; a packet arriving after that instant is late (dropped, counted);
* a path slower than ``delay_ms`` (section 5.6, "A path slower than the playout delay"): after ``LATE_RUN``
  packets in a row came late, the stream plays later by :attr:`LiveStream.extra_ns`, the worst of their
  lateness plus ``LATE_MARGIN_MS``, rounded up to ``LATE_STEP_MS``, so that ``delay_ms`` plus it stays within
  ``PLAY_DELAY_MAX_MS``; it only grows, for as long as the broadcast lasts. A new stream may start with an
  extra already (``extra_ms``: what the device's previous broadcast found its path needed, see
  :meth:`LiveStream.path_extra_ns`, or what its clock probes' round trip says the path needs, see
  :func:`extra_for_round_trip`), so that a slow path does not cost each broadcast, nor the first after a boot,
  its first ``LATE_RUN`` packets;
* a missing frame is rebuilt from the next packet's in-band FEC when that packet is there, else concealed by
  Opus PLC; gaps are NACKed (:class:`~loa.devices.nack.NackScheduler`).

Failure semantics: :meth:`LiveStream.on_rtp` and :meth:`LiveStream.on_rtcp` raise only
:class:`~loa.protocol.errors.RemoteProtocolError` subclasses (the packet is dropped and the caller counts it);
nothing else changes on failure. Opus packets libopus rejects are concealed and counted (``corrupt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from loa.codecs import CodecError, OpusDecoder, packet_samples
from loa.devices.frame import NS, Frame, ServerClock
from loa.devices.jitter import Insert, JitterBuffer, Slot, capacity_for
from loa.devices.nack import RTX_BUFFER_S, NackScheduler
from loa.protocol.errors import MalformedError, UnknownKeyError
from loa.protocol.rtcp import SenderReport, parse_rtcp
from loa.protocol.rtp import RtpPacket, parse_rtp
from loa.protocol.rtptime import ntp64_to_ns, seq_add, seq_diff, ts_add, ts_diff
from loa.protocol.srtp import StreamUnprotector

__all__ = ["LATE_MARGIN_MS", "LATE_RUN", "LATE_STEP_MS", "OLD_KEY_GRACE_S", "PLAY_DELAY_MAX_MS", "LiveStatistics",
           "LiveStream", "extra_for_round_trip"]

Pcm = npt.NDArray[np.int16]
OLD_KEY_GRACE_S = 10.0
CLOCK_RATE = 48_000
DEFAULT_SAMPLES = 960
LATE_RUN = 50  # late packets in a row (1 s of 20 ms frames) that make the stream play later
LATE_MARGIN_MS = 250  # added to the worst lateness of the run
LATE_STEP_MS = 100
PLAY_DELAY_MAX_MS = 10_000  # the limit of `join`'s delay_ms


def _extra_for(worst: float) -> int:
    """The extra delay, ns, for packets at worst ``worst`` seconds late: plus the margin, rounded up to the step."""
    step = LATE_STEP_MS * 1_000_000
    return -(-(round(worst * NS) + LATE_MARGIN_MS * 1_000_000) // step) * step


def extra_for_round_trip(round_trip_ns: int, delay_ms: int) -> int:
    """The extra delay, ns, a live broadcast of ``delay_ms`` starts with on a path whose least round trip, by the
    device's clock estimate, is ``round_trip_ns`` (section 5.6): none unless half of it, the least one-way delay
    of the server's packets as that estimate measures it, exceeds ``delay_ms``; else what packets that much late
    would ask for, within ``PLAY_DELAY_MAX_MS``."""
    late_ns = round_trip_ns // 2 - delay_ms * 1_000_000
    if late_ns <= 0:
        return 0
    return min(_extra_for(late_ns / NS), max(0, (PLAY_DELAY_MAX_MS - delay_ms) * 1_000_000))


@dataclass(frozen=True, slots=True)
class LiveStatistics:
    received: int
    bytes: int
    late: int
    duplicates: int
    played: int
    fec: int
    plc: int
    skipped: int
    unplayed: int  # frames still buffered when the broadcast went (see LiveStream.discard)
    corrupt: int
    nacks_sent: int
    resyncs: int
    jitter_ms: float
    extra_ms: int = 0  # played this much later than delay_ms: the path is slower (see LiveStream.extra_ns)


@dataclass(slots=True)
class _Track:
    ssrc: int
    receiver: StreamUnprotector | None
    buffer: JitterBuffer
    nack: NackScheduler = field(default_factory=NackScheduler)
    ntp_ref: int | None = None  # server ns of ts_ref
    ts_ref: int = 0
    samples: int = DEFAULT_SAMPLES  # duration of the last frame seen
    authenticated: bool = False
    key_until: float | None = None  # an old key, kept until then
    transit: float | None = None
    ts_base: int | None = None
    jitter: float = 0.0  # RFC 3550 interarrival jitter, in samples
    played_any: bool = False


class LiveStream:
    """One joined broadcast; see the module docstring. ``now`` values are local seconds."""

    def __init__(self, bid: int, ssrc: int, key: bytes, *, delay_ms: int, group: str | None = None,
                 extra_ms: int = 0) -> None:
        self.bid = bid
        self.delay_ns = delay_ms * 1_000_000  # the join's
        # added for a path slower than delay_ms (see the module docstring), within PLAY_DELAY_MAX_MS
        self.extra_ns = max(0, min(extra_ms * 1_000_000, PLAY_DELAY_MAX_MS * 1_000_000 - self.delay_ns))
        self._play_ns = self.delay_ns + self.extra_ns
        self._extra_s = self.extra_ns / NS
        self._late_run = 0  # late packets since the last one in time
        self._late_worst = 0.0  # the run's worst lateness, seconds
        # the packets at the end so far that delay_ms alone would have made late (> 0, the worst in _base_worst)
        # or not (< 0): what the next broadcast's extra comes from (path_extra_ns)
        self._base_run = 0
        self._base_worst = 0.0
        self.group = group
        self._capacity = capacity_for(self._play_ns // 1_000_000)
        self._tracks: list[_Track] = [self._track(ssrc, key)]
        self._decoder: OpusDecoder | None = None
        self.last_packet: float | None = None  # local time of the last authenticated packet
        self.ending = False  # a `leave` came: play out what is buffered, accept nothing new
        self._counts = dict.fromkeys(
            ("received", "bytes", "late", "duplicates", "played", "fec", "plc", "skipped", "unplayed", "corrupt",
             "resyncs", "nacks"),
            0,
        )
        self.gap_missing = 0  # numbers found missing on arrival (for the loss figure)
        self.expected = 0  # advance of the highest sequence number (for the loss figure)
        self._count_highest: int | None = None

    def _track(self, ssrc: int, key: bytes) -> _Track:
        return _Track(ssrc, StreamUnprotector(key, ssrc=ssrc), JitterBuffer(self._capacity))

    # -- membership ----------------------------------------------------------------------------------------

    @property
    def ssrcs(self) -> list[int]:
        """SSRCs whose packets are accepted now."""
        return [t.ssrc for t in self._tracks if t.receiver is not None]

    def rotate(self, ssrc: int, key: bytes, now: float) -> bool:
        """A new SSRC and key (``rotate``, or a `join` again after a server restart); False if nothing changed."""
        if any(t.ssrc == ssrc and t.receiver is not None for t in self._tracks):
            return False
        for track in self._tracks:
            if track.receiver is not None and track.key_until is None:
                track.key_until = now + OLD_KEY_GRACE_S
        self._tracks = [t for t in self._tracks if t.ssrc != ssrc]
        self._tracks.append(self._track(ssrc, key))
        return True

    def expire_keys(self, now: float) -> None:
        for track in self._tracks:
            if track.key_until is not None and now >= track.key_until:
                track.receiver = None
        self._tracks = [t for t in self._tracks if t.receiver is not None or len(t.buffer)]

    def next_key_expiry(self) -> float | None:
        return min((t.key_until for t in self._tracks if t.key_until is not None and t.receiver), default=None)

    # -- packets ---------------------------------------------------------------------------------------------

    def _find(self, ssrc: int) -> _Track:
        for track in self._tracks:
            if track.ssrc == ssrc and track.receiver is not None:
                return track
        raise UnknownKeyError(f"SSRC {ssrc:#010x} is not joined")

    def play_time(self, track: _Track, ts: int, clock: ServerClock) -> float | None:
        if track.ntp_ref is None or not clock.ready:
            return None
        server = track.ntp_ref + ts_diff(ts, track.ts_ref) * NS // CLOCK_RATE + self._play_ns
        return clock.to_local(server)

    def on_rtp(self, data: bytes, ssrc: int, now: float, clock: ServerClock, rtt: float) -> list[tuple[int, int]]:
        """Take one SRTP packet for ``ssrc``; returns ``(ssrc, seq)`` pairs to NACK now."""
        track = self._find(ssrc)
        assert track.receiver is not None
        packet = parse_rtp(track.receiver.unprotect(data))
        self._on_authenticated(track)
        self.last_packet = now
        self._counts["received"] += 1
        self._counts["bytes"] += len(data)
        ntp = packet.ntp64
        if ntp is not None:
            track.ntp_ref, track.ts_ref = ntp64_to_ns(ntp), packet.timestamp
        try:
            samples = packet_samples(packet.payload) if packet.payload else track.samples
        except CodecError:
            samples = track.samples
        self._update_jitter(track, packet.timestamp, now)
        if self.ending:
            return []
        play_at = self.play_time(track, packet.timestamp, clock)
        if play_at is not None:
            base = now - play_at + self._extra_s  # lateness for delay_ms alone
            if base <= 0:
                self._base_run = self._base_run - 1 if self._base_run < 0 else -1
            elif self._base_run <= 0:
                self._base_run, self._base_worst = 1, base
            else:
                self._base_run += 1
                self._base_worst = max(self._base_worst, base)
            if play_at < now:
                self._counts["late"] += 1
                track.nack.resolved(packet.sequence)
                self._late(now - play_at)
                return []
            self._late_run = 0
        buffer = track.buffer
        old_highest = buffer.highest
        outcome = buffer.insert(Slot(packet.sequence, packet.timestamp, packet.payload, samples, now, packet.marker))
        track.nack.resolved(packet.sequence)
        if outcome is Insert.DUPLICATE:
            self._counts["duplicates"] += 1
            return []
        if outcome is Insert.BEHIND:
            self._counts["late"] += 1
            return []
        if outcome is Insert.RESYNC:
            self._counts["resyncs"] += 1
            track.nack.clear()
            return []
        if old_highest is None:
            self.expected += 1
            return []
        ahead = seq_diff(packet.sequence, old_highest)
        if ahead <= 0:
            return []
        self.expected += ahead
        if ahead == 1:
            return []
        return [(ssrc, seq) for seq in self._gap(track, old_highest, packet, now, clock=clock, rtt=rtt)]

    def _late(self, by: float) -> None:
        """One more packet ``by`` seconds late: after ``LATE_RUN`` in a row, the stream plays later."""
        self._late_run += 1
        self._late_worst = max(self._late_worst, by)
        if self._late_run < LATE_RUN:
            return
        wanted = _extra_for(self._late_worst)
        self._late_run, self._late_worst = 0, 0.0
        room = PLAY_DELAY_MAX_MS * 1_000_000 - self._play_ns
        if room <= 0:
            return
        self.extra_ns += min(wanted, room)
        self._play_ns = self.delay_ns + self.extra_ns
        self._extra_s = self.extra_ns / NS
        capacity = capacity_for(self._play_ns // 1_000_000)
        if capacity > self._capacity:
            self._capacity = capacity
            for track in self._tracks:
                track.buffer.grow(capacity)

    def path_extra_ns(self, kept_ns: int) -> int:
        """The extra delay the device's next live broadcast should start with, this one having ended, given
        ``kept_ns``, the one this one was offered (section 5.6): none if its last ``LATE_RUN`` packets all came in
        time for ``delay_ms`` alone; if they all came late for it, what the worst lateness of the whole run of such
        packets that ended it asks for (as a run of late packets would); else (fewer packets, or some of each) the
        larger of ``kept_ns`` and this one's."""
        if self._base_run <= -LATE_RUN:
            return 0
        if self._base_run >= LATE_RUN:
            return min(_extra_for(self._base_worst), PLAY_DELAY_MAX_MS * 1_000_000 - self.delay_ns)
        return max(kept_ns, self.extra_ns)

    def _gap(self, track: _Track, old_highest: int, packet: RtpPacket, now: float, *, clock: ServerClock,
             rtt: float) -> list[int]:
        seq, ts = packet.sequence, packet.timestamp
        count = seq_diff(seq, old_highest) - 1
        self.gap_missing += count
        step = track.samples
        limit = int(RTX_BUFFER_S * CLOCK_RATE // max(step, 1))
        head = track.buffer.head
        missing = []
        for back in range(min(count, limit), 0, -1):
            lost = seq_add(seq, -back)
            if head is not None and seq_diff(lost, head) < 0:
                continue
            if track.buffer.get(lost) is not None:
                continue
            missing.append((lost, self.play_time(track, ts_add(ts, -back * step), clock)))
        return track.nack.on_gap(missing, now, rtt)

    def _on_authenticated(self, track: _Track) -> None:
        if track.authenticated:
            return
        track.authenticated = True
        for other in self._tracks:  # the new SSRC proved itself: older keys go (their buffers still play)
            if other is not track and other.receiver is not None and other.key_until is not None:
                other.receiver = None

    def _update_jitter(self, track: _Track, ts: int, now: float) -> None:
        if track.ts_base is None:
            track.ts_base = ts
        transit = now * CLOCK_RATE - ts_diff(ts, track.ts_base)
        if track.transit is not None:
            d = abs(transit - track.transit)
            if d < CLOCK_RATE * 10:  # a timestamp jump (a gap after a pause) is not jitter
                track.jitter += (d - track.jitter) / 16
        track.transit = transit

    def count(self, data: bytes, now: float) -> None:
        """Count an RTP packet without authenticating or playing it (a counting device in a big fleet)."""
        self.last_packet = now
        self._counts["received"] += 1
        self._counts["bytes"] += len(data)
        seq = int.from_bytes(data[2:4], "big")
        highest = self._count_highest
        if highest is None:
            self.expected += 1
            self._count_highest = seq
            return
        ahead = seq_diff(seq, highest)
        if ahead > 0:
            self.expected += ahead
            self.gap_missing += ahead - 1
            self._count_highest = seq

    def on_rtcp(self, data: bytes, ssrc: int) -> None:
        """Take one SRTCP compound sent by the stream's SSRC ``ssrc``: its SR sets the timestamp mapping."""
        track = self._find(ssrc)
        assert track.receiver is not None
        for packet in parse_rtcp(track.receiver.unprotect_rtcp(data)):
            if isinstance(packet, SenderReport):
                if packet.ssrc != ssrc:
                    raise MalformedError("sender report for another SSRC")
                track.ntp_ref, track.ts_ref = ntp64_to_ns(packet.ntp), packet.rtp_timestamp

    def nack_due(self, now: float, rtt: float) -> list[tuple[int, int]]:
        return [(t.ssrc, seq) for t in self._tracks for seq in t.nack.due(now, rtt)]

    def next_nack(self, rtt: float) -> float | None:
        return min((d for t in self._tracks if (d := t.nack.next_deadline(rtt)) is not None), default=None)

    # -- frames ----------------------------------------------------------------------------------------------

    def _head(self, track: _Track, clock: ServerClock) -> tuple[int, float | None] | None:
        """The head's timestamp and play time, or None when nothing after it has arrived."""
        buffer = track.buffer
        head = buffer.head
        if head is None or buffer.pending() == 0:
            return None
        slot = buffer.get(head)
        if slot is not None:
            ts = slot.ts
        else:
            following = buffer.next_present(head, limit=buffer.pending())  # a gap of any length (an outage)
            if following is None:
                return None
            ts = ts_add(following.ts, -seq_diff(following.seq, head) * track.samples)
        return ts, self.play_time(track, ts, clock)

    def _next(self, clock: ServerClock) -> tuple[_Track, int, float] | None:
        best: tuple[_Track, int, float] | None = None
        for track in self._tracks:
            head = self._head(track, clock)
            if head is None or head[1] is None:
                continue
            if best is None or head[1] < best[2]:
                best = (track, head[0], head[1])
        return best

    def next_time(self, clock: ServerClock) -> float | None:
        best = self._next(clock)
        return best[2] if best is not None else None

    def buffered_end(self, clock: ServerClock) -> float | None:
        """Local time at which the last frame held (of the newest track) ends, for a `leave` to play out."""
        end = None
        for track in self._tracks:
            highest = track.buffer.highest
            slot = track.buffer.get(highest) if highest is not None else None
            if slot is None:
                continue
            at = self.play_time(track, ts_add(slot.ts, slot.samples), clock)
            if at is not None and (end is None or at > end):
                end = at
        return end

    def take(self, now: float, clock: ServerClock, decode: bool) -> Frame | None:
        best = self._next(clock)
        if best is None:
            return None
        track, ts, at = best
        seq, slot = track.buffer.take()
        track.nack.resolved(seq)
        server_at = (track.ntp_ref or 0) + ts_diff(ts, track.ts_ref) * NS // CLOCK_RATE + self._play_ns
        pcm = None
        if slot is not None:
            kind = "packet"
            samples = track.samples = slot.samples
            if decode:
                pcm = self._decode(slot.payload, samples)
            self._counts["played"] += 1
        else:
            samples = track.samples
            following = track.buffer.get(seq_add(seq, 1))
            if following is not None:
                kind = "fec"
                self._counts["fec"] += 1
                if decode:
                    pcm = self._fec(following.payload, samples)
            else:
                kind = "plc"
                self._counts["plc"] += 1
                if decode:
                    pcm = self._conceal(samples)
        track.played_any = True
        self._retire_older(track)
        return Frame(at, server_at, samples, kind, pcm, track.ssrc, seq, ts, self.extra_ns)

    def _retire_older(self, track: _Track) -> None:
        """A newer track played: older tracks' remaining frames would overlap it, and their keys are gone."""
        index = self._tracks.index(track)
        if index:
            for older in self._tracks[:index]:
                self._counts["nacks"] += older.nack.sent
            self._tracks = self._tracks[index:]

    def skip_before(self, local: float, clock: ServerClock) -> int:
        skipped = 0
        for track in self._tracks:
            for _ in range(track.buffer.capacity + 1):  # bounded by the ring
                head = self._head(track, clock)
                if head is None or head[1] is None or head[1] >= local:
                    break
                seq, slot = track.buffer.take()
                track.nack.resolved(seq)
                if slot is not None:
                    track.samples = slot.samples
                skipped += 1
        self._counts["skipped"] += skipped
        if skipped and self._decoder is not None:
            self._decoder.reset()
        return skipped

    def _decoder_(self) -> OpusDecoder:
        if self._decoder is None:
            self._decoder = OpusDecoder()
        return self._decoder

    def _decode(self, payload: bytes, samples: int) -> Pcm | None:
        try:
            return self._decoder_().decode(payload)
        except CodecError:
            self._counts["corrupt"] += 1
            return self._conceal(samples)

    def _fec(self, payload: bytes, samples: int) -> Pcm | None:
        try:
            return self._decoder_().decode_fec(payload, samples)
        except CodecError:
            self._counts["corrupt"] += 1
            return self._conceal(samples)

    def _conceal(self, samples: int) -> Pcm | None:
        try:
            return self._decoder_().conceal(samples)
        except CodecError:
            return None

    def discard(self) -> int:
        """The broadcast is gone with frames still buffered (a device that fell behind its own playout: the drain
        deadline came before the playout of what was left): count them as ``unplayed`` and empty the buffers."""
        left = 0
        for track in self._tracks:
            for _ in range(track.buffer.pending()):  # bounded by the ring's span
                track.buffer.take()
                left += 1
        self._counts["unplayed"] += left
        return left

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def statistics(self) -> LiveStatistics:
        c = self._counts
        jitter = max((t.jitter for t in self._tracks), default=0.0)
        return LiveStatistics(
            received=c["received"], bytes=c["bytes"], late=c["late"], duplicates=c["duplicates"],
            played=c["played"], fec=c["fec"], plc=c["plc"], skipped=c["skipped"], unplayed=c["unplayed"],
            corrupt=c["corrupt"],
            nacks_sent=c["nacks"] + sum(t.nack.sent for t in self._tracks), resyncs=c["resyncs"],
            jitter_ms=jitter / 48.0, extra_ms=self.extra_ns // 1_000_000,
        )
