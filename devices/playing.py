"""Playout, amplifier, watchdog and ``state`` at the reference device (PROTOCOL.md sections 5.6, 6.2, 6.3, 4.4):
what it hands its sink and what it says it plays. A part of :class:`~loa.devices.core.SpeakerCore` (a mixin over
its state, like :class:`~loa.devices.commands.CommandHandling`), kept apart so that each file stays readable.

:meth:`PlayoutHandling.play` hands the sink every frame due, switching sources at frame boundaries; a switch
sends ``state`` (section 4.4) and a finished broadcast ends. The watchdog (section 5.6) falls back when the current
live stream goes silent for ``watchdog_ms`` and hands back at the stream's next frame; a stream silent for
:data:`STALL_PROBE_S` also makes the device send a keepalive (at most every :data:`STALL_PROBE_EVERY_S`), so that a
server that lost track of its address learns it. In test mode each frame played is reported in ``played``.
"""

from __future__ import annotations

import abc
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from loa.devices.broadcasting import BroadcastHandling
from loa.devices.playout import OutputEvent, PlayoutEntry, Source
from loa.devices.watchdog import DEFAULT_WATCHDOG_MS
from loa.protocol.control import Message, Played, PlayedFrame, State
from loa.protocol.errors import LocalProtocolError

if TYPE_CHECKING:
    from loa.devices.telemetry import ReportSchedule
    from loa.protocol.connection import DeviceConnection

__all__ = ["MAX_LOOP", "STALL_PROBE_EVERY_S", "STALL_PROBE_S", "PlayoutHandling"]

STALL_PROBE_S = 0.25  # the current stream silent this long: a keepalive tells a roaming server where we are
STALL_PROBE_EVERY_S = 1.0
MAX_LOOP = 64  # rounds of output events in one play() call


class PlayoutHandling(BroadcastHandling):
    """The playout half of :class:`~loa.devices.core.SpeakerCore`: its methods run on the core's state, which the
    core creates (the annotations below and :class:`~loa.devices.broadcasting.BroadcastHandling`'s); the abstract
    methods are the core's."""

    conn: DeviceConnection
    report: ReportSchedule
    lead: float
    state: tuple[int | None, str] | None
    recent_states: deque[tuple[int | None, str]]
    state_since: int
    _now: float
    _last_stall_probe: float
    _played: list[PlayedFrame]
    _played_since: float | None

    @abc.abstractmethod
    def _send(self, message: Message, now: float) -> int | None: ...

    @abc.abstractmethod
    def _flush(self) -> None: ...

    @abc.abstractmethod
    def _stale(self) -> None: ...

    @abc.abstractmethod
    def faults(self, now: float) -> tuple[str, ...]: ...

    def play(self, now: float) -> None:
        """Hand every frame due by ``now + lead`` to the sink, switching sources at frame boundaries."""
        self._now = now
        self._stale()
        for broadcast in self.broadcasts.values():
            live = broadcast.live
            if live is not None and broadcast.bid != self.arbiter.current and self._held_by_output(broadcast.bid):
                continue
            if live is not None and broadcast.bid != self.arbiter.current:
                live.skip_before(now, self.clock)  # waiting live streams stay at their live position
        for _ in range(MAX_LOOP):
            events = self.output.play_until(now + self.lead, now, self.clock)
            if not events:
                break
            for event in events:
                self._on_output(event, now)
        self._release_handovers()
        self._flush()

    def _on_output(self, event: OutputEvent, now: float) -> None:
        if event.kind == "switched":
            src = {"ip": "ip", "stored": "ip"}.get(event.source, event.source)
            bid = event.bid if event.bid is not None else self.arbiter.current
            self._set_state(bid, src, event.at, now)
            if event.bid is not None and event.bid in self.broadcasts:
                self.broadcasts[event.bid].played = True
        elif event.kind == "finished" and event.bid is not None:
            self._end(event.bid, now, at=event.at)

    def _audible(self, at: float, cls: int) -> bool:
        return self.amp.audible(at, self.settings.preroll_ms / 1000, muted=self.settings.muted, emergency=cls == 2)

    # -- watchdog, amplifier, state ----------------------------------------------------------------------------

    @property
    def _watchdog_s(self) -> float:
        return int(self.settings.get("watchdog_ms") or DEFAULT_WATCHDOG_MS) / 1000

    def _current_packet_time(self) -> float | None:
        current = self.arbiter.current
        if current is None:
            return None
        live = self.broadcasts[current].live
        return live.last_packet if live is not None else None

    def _on_watchdog_fired(self, now: float) -> None:
        self.report.faults_changed(self.faults(now), now)
        self._plan(now)

    def _on_watchdog_cleared(self, now: float) -> None:
        self.report.faults_changed(self.faults(now), now)
        fallback = self.output.secondary
        if fallback is not None and not fallback.handover:  # it plays on until the stream's next frame
            self.output.secondary = Source(fallback.player, fallback.source, fallback.bid, fallback.cls, handover=True)
        self._plan(now)

    def _stall_deadline(self) -> float | None:
        current = self.arbiter.current
        if current is None or not self.broadcasts[current].is_live:
            return None
        last = self._current_packet_time() or self._current_since or 0.0
        return max(last + STALL_PROBE_S, self._last_stall_probe + STALL_PROBE_EVERY_S)

    def _stall_probe(self, now: float) -> None:
        deadline = self._stall_deadline()
        if deadline is not None and now >= deadline and self.conn.connected:
            self._last_stall_probe = now
            with contextlib.suppress(LocalProtocolError):
                self.conn.session.send(b"", now)  # a keepalive: the server learns our address if it changed

    def _update_amp(self, now: float, *, force_on: bool = False) -> None:
        wanted = force_on or self.settings.amp_held or self.arbiter.current is not None
        self.amp.update(now, wanted=wanted, keep=self._scheduled_preroll(now))

    def _scheduled_preroll(self, now: float) -> bool:
        server_now = self.clock.to_server(now)
        preroll = self.settings.preroll_ms * 1_000_000
        return server_now is not None and any(server_now >= p.at - preroll for p in self._scheduled.values())

    def amp_state(self, now: float) -> str:
        return self.amp.state(now, self.settings.preroll_ms / 1000)

    def _set_state(self, bid: int | None, src: str, at: float, now: float) -> None:
        if self.state == (bid, src):
            return
        self.state = (bid, src)
        self.recent_states.append(self.state)
        self.state_since = self.clock.to_server_any(at)
        self._send_state(now)

    def _send_state(self, now: float) -> None:
        if self.state is not None:
            bid, src = self.state
            self._send(State(bid=bid, src=src, since=self.state_since), now)

    # -- played reports (test mode) ------------------------------------------------------------------------

    def _on_played(self, entry: PlayoutEntry) -> None:
        self._played.append(PlayedFrame(bid=entry.bid, ssrc=entry.ssrc, seq=entry.seq, rtp_ts=entry.rtp_ts,
                                        at=self.clock.to_server_any(entry.at)))
        if self._played_since is None:
            self._played_since = entry.at
        if len(self._played) >= 32:
            self._flush_played(entry.at)

    def _flush_played(self, now: float) -> None:
        while self._played:
            batch, self._played = self._played[:32], self._played[32:]
            self._send(Played(log=tuple(batch)), now)
        self._played_since = None
