"""The output of a device: which source feeds the speaker at each frame, the playout log, sans-I/O.

:class:`Output` holds a *primary* source (the current broadcast, or what plays while none is current) and an
optional *secondary* one that fills in until the primary's next frame: the broadcast being preempted until the
preempting one's first playable frame (the switch happens at that frame's boundary, section 6.2), or the
watchdog's fallback until the stream's frames come back (section 5.6). The first frame the primary plays
retires the secondary. :meth:`Output.play_until` hands every frame due by ``horizon`` to the sink, in time
order, and records broadcast frames in the :class:`PlayoutLog`.

The log keeps, per frame: broadcast, SSRC, sequence number, RTP timestamp (stored programmes: SSRC 0, packet
index, sample position), the device-clock instant, the server time it stood for, and - when a simulation gives
the device a ``true_time`` function - the instant on the true timeline, so devices can be compared.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loa.devices.frame import Frame, Player, ServerClock
from loa.devices.sinks import FrameInfo, FrameSink

__all__ = ["Output", "OutputEvent", "PlayoutEntry", "PlayoutLog", "Source"]

MAX_FRAMES_PER_CALL = 4096


@dataclass(frozen=True, slots=True)
class Source:
    """A player with what it is: ``source`` (``ip``/``stored``/``local``/``fm``/``line``), broadcast and class."""

    player: Player
    source: str
    bid: int | None = None
    cls: int = 0
    handover: bool = False  # a secondary that gives way for good once the primary plays


@dataclass(frozen=True, slots=True)
class PlayoutEntry:
    bid: int
    ssrc: int
    seq: int
    rtp_ts: int
    at: float  # device clock, seconds
    server_at: int  # ns: the server time the frame was scheduled for
    kind: str
    true_at: float | None = None
    extra_ns: int = 0  # played this much later than the stream's delay_ms (Frame.extra_ns)


class PlayoutLog:
    """Broadcast frames as played; bounded to the last ``limit`` entries (None: unbounded)."""

    def __init__(self, limit: int | None = 200_000, *, true_time: Callable[[float], float] | None = None) -> None:
        self.entries: deque[PlayoutEntry] = deque(maxlen=limit)
        self.true_time = true_time
        self.count = 0

    def record(self, bid: int, frame: Frame) -> PlayoutEntry:
        true_at = self.true_time(frame.at) if self.true_time is not None else None
        entry = PlayoutEntry(bid, frame.ssrc, frame.seq, frame.rtp_ts, frame.at, frame.server_at, frame.kind, true_at,
                             frame.extra_ns)
        self.entries.append(entry)
        self.count += 1
        return entry

    def for_bid(self, bid: int) -> list[PlayoutEntry]:
        return [e for e in self.entries if e.bid == bid]

    def clear(self) -> None:
        self.entries.clear()


@dataclass(frozen=True, slots=True)
class OutputEvent:
    """``"switched"``: a source played its first frame (``bid``, ``source``, at local ``at``);
    ``"finished"``: the primary has nothing more to play (a stored programme ended) at ``at``."""

    kind: str
    source: str
    bid: int | None
    at: float


class Output:
    """See the module docstring. ``audible(at, cls)`` says whether the speaker is heard at ``at``."""

    def __init__(self, sink: FrameSink, log: PlayoutLog, *, audible: Callable[[float, int], bool],
                 volume: Callable[[], int]) -> None:
        self.sink = sink
        self.log = log
        self.primary: Source | None = None
        self.secondary: Source | None = None
        self._audible = audible
        self._volume = volume
        self.playing: tuple[int | None, str] | None = None  # (bid, source) of the last frame
        self.frames = 0
        self.samples = 0  # of broadcast frames: what telemetry calls seconds of stream audio played
        self.on_entry: Callable[[PlayoutEntry], None] | None = None

    def set(self, primary: Source | None, secondary: Source | None = None) -> None:
        self.primary, self.secondary = primary, secondary

    def next_time(self, clock: ServerClock) -> float | None:
        times = [s.player.next_time(clock) for s in (self.primary, self.secondary) if s is not None]
        return min((t for t in times if t is not None), default=None)

    def play_until(self, horizon: float, now: float, clock: ServerClock) -> list[OutputEvent]:
        """Play every frame that starts by ``horizon``; stops early after an event the caller must act on."""
        events: list[OutputEvent] = []
        decode = self.sink.decode
        for _ in range(MAX_FRAMES_PER_CALL):
            primary, secondary = self.primary, self.secondary
            p_at = primary.player.next_time(clock) if primary is not None else None
            s_at = secondary.player.next_time(clock) if secondary is not None else None
            source: Source
            if secondary is not None and s_at is not None and s_at <= horizon and (p_at is None or s_at < p_at):
                source = secondary
            elif primary is not None and p_at is not None and p_at <= horizon:
                source = primary
                if secondary is not None and secondary.handover:
                    self.secondary = None
            else:
                if primary is not None and p_at is None and getattr(primary.player, "finished", False):
                    events.append(OutputEvent("finished", primary.source, primary.bid, now))
                break
            frame = source.player.take(now, clock, decode)
            if frame is None:
                break
            self._emit(source, frame, events)
            if source is primary and getattr(primary.player, "finished", False):
                events.append(OutputEvent("finished", primary.source, primary.bid, frame.at + frame.samples / 48000))
                break
            if events:
                break
        return events

    def _emit(self, source: Source, frame: Frame, events: list[OutputEvent]) -> None:
        key = (source.bid, source.source)
        if key != self.playing:
            self.playing = key
            events.append(OutputEvent("switched", source.source, source.bid, frame.at))
        info = FrameInfo(source.source, frame.kind, frame.samples, source.bid, frame.ssrc, frame.seq, frame.rtp_ts,
                         frame.server_at, self._audible(frame.at, source.cls), self._volume())
        self.sink.on_frame(frame.at, frame.pcm, info)
        self.frames += 1
        if source.bid is not None:
            self.samples += frame.samples
        if source.bid is not None:
            entry = self.log.record(source.bid, frame)
            if self.on_entry is not None:
                self.on_entry(entry)
