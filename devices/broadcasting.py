"""Broadcasts at the reference device (PROTOCOL.md sections 4.4, 6.2-6.5, 7.2-7.4): the commands that make them
arrive and end, arbitration, and what the output plays as a result. A part of :class:`~loa.devices.core.SpeakerCore`
(a mixin over its state), kept apart so that each file stays readable.

* ``play`` waits for its server instant (switching the amplifier on ``preroll_ms`` before), and for its content;
  one received late starts at ``now - at``; one received after the content's end is ignored.
* ``join`` arrives at once, except an emergency-class one, which waits (up to ``EMERGENCY_JOIN_WAIT_S``) for an
  accepted alert of its ``bid``; a ``join`` for a broadcast already held (the server restarted) changes its SSRC
  and key like ``rotate``. ``leave`` of the current live broadcast plays out what is buffered first.
* Alerts are verified (:class:`~loa.devices.alerts.AlertBook`) before anything plays; refusals are counted by
  error name. An accepted alert arrives as broadcast ``bid``; cancel and expiry end it.
* Arbitration events become the output's plan: a preempted broadcast keeps playing until the new one's first
  frame (the switch at a frame boundary), a live one resumes at its live position, a stored one where it stopped.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from loa.devices.broadcasts import Broadcast
from loa.devices.content import StorageError
from loa.devices.frame import NS
from loa.devices.live import LiveStream, extra_for_round_trip
from loa.devices.playout import Source
from loa.devices.stored import StoredPlayer
from loa.devices.synth import SynthPlayer
from loa.devices.watchdog import Watchdog
from loa.protocol.control import Join, Leave, Play, Rotate, SignedAlert, SignedAlertCancel
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.priority import Dropped, Ended, Event, Preempted, Resumed, Started, Waiting

if TYPE_CHECKING:
    from collections import Counter

    from loa.devices.alerts import AlertBook
    from loa.devices.amplifier import Amplifier
    from loa.devices.broadcasts import Finished
    from loa.devices.content import ContentStore
    from loa.devices.frame import ServerClock
    from loa.devices.playout import Output
    from loa.devices.settings import CommandOrder, Settings
    from loa.devices.telemetry import ReportSchedule
    from loa.protocol.priority import Arbiter

__all__ = ["EMERGENCY_JOIN_WAIT_S", "BroadcastHandling"]

EMERGENCY_JOIN_WAIT_S = 10.0


class BroadcastHandling(abc.ABC):
    """The broadcast half of :class:`~loa.devices.core.SpeakerCore`: its methods run on the core's state, which
    the core creates (the annotations below); the abstract methods are the core's."""

    arbiter: Arbiter
    broadcasts: dict[int, Broadcast]
    finished: Finished
    settings: Settings
    order: CommandOrder
    output: Output
    clock: ServerClock
    watchdog: Watchdog
    store: ContentStore
    alerts: AlertBook
    amp: Amplifier
    caps: tuple[str, ...]
    count_only: bool
    retired: Counter[str]
    drop_counts: Counter[str]
    alerts_refused: Counter[str]
    alerts_accepted: int
    report: ReportSchedule
    path_extra_ns: int  # the extra delay the next live broadcast starts with (LiveStream.path_extra_ns)
    _by_ssrc: dict[int, LiveStream]
    _handing_over: dict[int, Broadcast]
    _scheduled: dict[int, Play]
    _pending_emergency: dict[int, tuple[Join, float]]
    _draining: dict[int, float]
    _deferred_alerts: list[tuple[SignedAlert | SignedAlertCancel, bool]]
    _idle: tuple[tuple[str, int | None], Source | None] | None
    _current_since: float | None

    @abc.abstractmethod
    def _set_state(self, bid: int | None, src: str, at: float, now: float) -> None: ...

    @abc.abstractmethod
    def _update_amp(self, now: float, *, force_on: bool = False) -> None: ...

    @abc.abstractmethod
    def _deadline(self, server_ns: int) -> float | None: ...

    @abc.abstractmethod
    def faults(self, now: float) -> tuple[str, ...]: ...

    def _held_by_output(self, bid: int) -> bool:
        return any(s is not None and s.bid == bid for s in (self.output.primary, self.output.secondary))

    def _reindex(self) -> None:
        """Index the SSRCs of every live broadcast, and of forgotten ones the output still plays out of (a
        programme dropped by a preemption keeps receiving until the new broadcast's first frame)."""
        live = [*self.broadcasts.values(), *self._handing_over.values()]
        self._by_ssrc = {ssrc: b.live for b in live if b.live is not None for ssrc in b.live.ssrcs}

    def _release_handovers(self) -> None:
        """Close the forgotten broadcasts the output no longer plays out of."""
        done = [bid for bid in self._handing_over if not self._held_by_output(bid)]
        for bid in done:
            broadcast = self._handing_over.pop(bid)
            if broadcast.live is not None:
                self.retired["unplayed"] += broadcast.live.discard()
            broadcast.close()
        if done:
            self._reindex()

    # -- broadcasts --------------------------------------------------------------------------------------------

    def _known(self, bid: int) -> bool:
        return bid in self.finished or bid in self.broadcasts or bid in self._scheduled

    def _on_play(self, message: Play, now: float) -> None:
        if not self.order.accept(("bid", message.bid), message.id) or self._known(message.bid):
            return
        self._scheduled[message.bid] = message
        self._check_schedules(now)

    def _schedule_times(self) -> list[float | None]:
        times: list[float | None] = []
        preroll = self.settings.preroll_ms * 1_000_000
        for play in self._scheduled.values():
            if self.amp.on_at is None:
                times.append(self._deadline(play.at - preroll))
            times.append(self._deadline(play.at))
        for bid in self.arbiter.waiting:  # a stored programme that never played ends while waiting
            broadcast = self.broadcasts.get(bid)
            if broadcast is not None and broadcast.stored is not None and not broadcast.played:
                times.append(self._deadline(broadcast.stored.end_time()))
        return times

    def _check_schedules(self, now: float) -> None:
        server_now = self.clock.to_server(now)
        if server_now is None:
            return
        preroll = self.settings.preroll_ms * 1_000_000
        for bid, play in list(self._scheduled.items()):
            if server_now >= play.at - preroll:
                self._update_amp(now, force_on=True)
            if server_now < play.at or not self.store.has(play.cid):
                continue
            del self._scheduled[bid]
            try:
                programme = self.store.programme(play.cid)
            except StorageError:
                self.drop_counts["StorageError"] += 1
                self.finished.add(bid)
                continue
            if (server_now - play.at) * 48_000 // NS >= programme.samples:
                self.finished.add(bid)  # received after the content's end: ignored
                continue
            player = StoredPlayer(programme, play.at)
            self.broadcasts[bid] = Broadcast(bid, play.cls, play.lvl, play.policy, stored=player, at=play.at)
            self._arrive(bid, play.cls, play.lvl, play.policy, now)
        for bid in list(self.arbiter.waiting):
            broadcast = self.broadcasts.get(bid)
            stored = broadcast.stored if broadcast is not None and not broadcast.played else None
            if stored is not None and server_now >= stored.end_time():
                self._end(bid, now)

    def _on_join(self, message: Join, now: float) -> None:
        bid = message.bid
        if not self.order.accept(("bid", bid), message.id) or bid in self.finished or bid in self._scheduled:
            return
        held = self.broadcasts.get(bid)
        if held is not None:
            if held.live is None and held.stored is None:  # an accepted alert whose stream arrives now
                held.live = self._new_live(message, now)
                held.policy = message.policy
            elif held.live is not None:  # joined again (the server restarted): new SSRC and key, same broadcast
                held.live.rotate(message.ssrc, message.key, now)
            self._reindex()
            self._plan(now)
            return
        if message.cls == 2:
            accepted = self.alerts.for_bid(bid)
            if accepted is None:
                self._pending_emergency[bid] = (message, now + EMERGENCY_JOIN_WAIT_S)
                return
            if not accepted.playable:
                return  # an exercise alert on a device that does not play exercises
        self.broadcasts[bid] = Broadcast(bid, message.cls, message.lvl, message.policy,
                                         live=self._new_live(message, now))
        self._reindex()
        self._arrive(bid, message.cls, message.lvl, message.policy, now)

    def _new_live(self, join: Join, now: float) -> LiveStream:
        """The stream of a joined broadcast, starting with the extra delay the last one found its path needed, or
        the one the clock probes' least round trip asks for, whichever is larger (section 5.6): fault
        ``late_path`` goes out at once."""
        extra_ns = max(self.path_extra_ns, self._heard_extra_ns(join.delay_ms))
        live = LiveStream(join.bid, join.ssrc, join.key, delay_ms=join.delay_ms, group=join.group,
                          extra_ms=extra_ns // 1_000_000)
        if live.extra_ns:
            self.report.faults_changed(self.faults(now), now)
        return live

    def _heard_extra_ns(self, delay_ms: int) -> int:
        """The extra delay the clock probes' least round trip asks for (section 5.6), once the estimate is ready."""
        return extra_for_round_trip(self.clock.estimator.round_trip_ns(), delay_ms) if self.clock.ready else 0

    def _on_rotate(self, message: Rotate, now: float) -> None:
        held = self.broadcasts.get(message.bid)
        if held is None or held.live is None or not self.order.accept(("bid", message.bid), message.id):
            return
        held.live.rotate(message.ssrc, message.key, now)
        self._reindex()

    def _on_leave(self, message: Leave, now: float) -> None:
        bid = message.bid
        if not self.order.accept(("bid", bid), message.id):
            return
        self._pending_emergency.pop(bid, None)
        if self._scheduled.pop(bid, None) is not None:
            self.finished.add(bid)
        held = self.broadcasts.get(bid)
        if held is None:  # it ended before it arrived (its alert or join was lost and overtaken): never start it
            self.finished.add(bid)
            return
        if bid == self.arbiter.current and held.live is not None:
            end = held.live.buffered_end(self.clock)
            if end is not None and end > now:
                held.live.ending = True  # play out what was sent before the end
                self._draining[bid] = end
                return
        self._end(bid, now)

    def _on_alert(self, message: SignedAlert, now: float, *, beacon: bool = False) -> None:
        server_now = self.clock.to_server(now)
        if server_now is None or not self.settings.zones:
            # checked as soon as the clock estimate is ready and the first `config` gave the zone path (6.4)
            self._deferred_alerts.append((message, beacon))
            return
        if self.alerts.other_copy(message.body, beacon=beacon):
            return  # its beacon was accepted (section 6.4.2)
        try:
            accepted = self.alerts.accept(
                message.body, message.sig, now=server_now, zones=self.settings.zones,
                exercise=bool(self.settings.get("exercise")), beacon=beacon,
            )
        except RemoteProtocolError as exc:
            self.drop_counts[type(exc).__name__] += 1
            self.alerts_refused[type(exc).__name__] += 1
            return
        self.alerts_accepted += 1
        alert = accepted.alert
        if not accepted.playable or self._known(alert.bid):
            return
        pending = self._pending_emergency.pop(alert.bid, None)
        if pending is not None:
            join = pending[0]
            self.broadcasts[alert.bid] = Broadcast(alert.bid, join.cls, join.lvl, join.policy,
                                                   live=self._new_live(join, now))
            self._reindex()
            self._arrive(alert.bid, join.cls, join.lvl, join.policy, now)
        else:
            self.broadcasts[alert.bid] = Broadcast(alert.bid, alert.cls, alert.lvl, "resume")
            self._arrive(alert.bid, alert.cls, alert.lvl, "resume", now)

    def _on_alert_cancel(self, message: SignedAlertCancel, now: float) -> None:
        server_now = self.clock.to_server(now)
        if server_now is None:
            self._deferred_alerts.append((message, False))
            return
        try:
            bid = self.alerts.cancel(message.body, message.sig, now=server_now)
        except RemoteProtocolError as exc:
            self.drop_counts[type(exc).__name__] += 1
            self.alerts_refused[type(exc).__name__] += 1
            return
        if bid is not None:
            self._pending_emergency.pop(bid, None)
            self._end(bid, now)

    def _check_alert_expiry(self, now: float) -> None:
        expiry = self.alerts.next_expiry()
        if expiry is None:
            return
        server_now = self.clock.to_server(now)
        if server_now is None or server_now < expiry:
            return
        for bid in self.alerts.expire(server_now):
            self._end(bid, now)

    def _emergency_current(self) -> bool:
        current = self.arbiter.current
        return current is not None and self.broadcasts[current].cls == 2

    # -- arbitration -------------------------------------------------------------------------------------------

    def _arrive(self, bid: int, cls: int, lvl: int, policy: str, now: float) -> None:
        self._apply(self.arbiter.arrive(bid, cls, lvl, policy), now)

    def _end(self, bid: int, now: float, *, at: float | None = None) -> None:
        self._draining.pop(bid, None)
        self._apply(self.arbiter.end(bid), now, at=at)

    def _forget(self, bid: int) -> None:
        broadcast = self.broadcasts.pop(bid, None)
        self.finished.add(bid)
        if broadcast is not None:
            held = self._held_by_output(bid)
            if broadcast.live is not None:
                self.path_extra_ns = broadcast.live.path_extra_ns(self.path_extra_ns)
                if not held:
                    broadcast.live.discard()
                stats = broadcast.live.statistics()
                for name in ("received", "bytes", "late", "played", "fec", "plc", "skipped", "unplayed",
                             "nacks_sent"):
                    self.retired[name] += getattr(stats, name)
                self.retired["gap_missing"] += broadcast.live.gap_missing
                self.retired["expected"] += broadcast.live.expected
            if held:
                self._handing_over[bid] = broadcast
            else:
                broadcast.close()
            self._reindex()

    def _apply(self, events: list[Event], now: float, *, at: float | None = None) -> None:
        for event in events:
            if isinstance(event, Started | Resumed):
                self._became_current(event.bid, now, at=at, resumed=isinstance(event, Resumed))
            elif isinstance(event, Preempted):
                self._handover(event.bid)
            elif isinstance(event, Dropped | Ended):
                if event.bid != self.arbiter.current and event.bid not in self.arbiter.waiting:
                    self._forget(event.bid)
            elif isinstance(event, Waiting):
                pass
        self._update_amp(now)
        self._plan(now)

    def _became_current(self, bid: int, now: float, *, at: float | None, resumed: bool) -> None:
        broadcast = self.broadcasts[bid]
        self._current_since = now
        instant = at if at is not None else now
        if broadcast.stored is not None:
            server_now = self.clock.to_server(instant)
            if server_now is not None:
                if resumed:
                    broadcast.stored.resume_at(server_now)  # continues where it was preempted
                else:
                    assert broadcast.at is not None
                    broadcast.stored.seek(max(0, (server_now - broadcast.at) * 48_000 // NS))
            self.watchdog.disarm()
        else:
            if broadcast.live is not None:
                broadcast.live.skip_before(instant, self.clock)  # a live stream plays at its live position
            self.watchdog.arm(now)
        self._update_amp(now, force_on=True)

    def _handover(self, bid: int) -> None:
        """``bid`` is preempted: if it is what the speaker plays, it goes on until the new one's first frame."""
        primary = self.output.primary
        if primary is not None and primary.bid == bid and self.output.playing == (bid, primary.source):
            self.output.secondary = Source(primary.player, primary.source, bid, primary.cls, handover=True)

    def _plan(self, now: float) -> None:
        """Set what the output plays from the current state (see :class:`~loa.devices.playout.Output`)."""
        current = self.arbiter.current
        if self.count_only:
            self._plan_counting(current, now)
            return
        secondary = self.output.secondary if self.output.secondary is not None and self.output.secondary.handover \
            else None
        if current is None:
            self.watchdog.disarm()
            primary = self._idle_source(now)
            self.output.set(primary, None)
            if primary is None:
                self.output.playing = None
                self._set_state(None, "idle", now, now)
            return
        broadcast = self.broadcasts[current]
        primary = broadcast.source()
        if secondary is not None and secondary.bid == current:
            secondary = None
        if self.watchdog.fired:
            secondary = self._fallback_source(now)
        self.output.set(primary, secondary)
        if self.watchdog.fired and secondary is None:
            self.output.playing = None
            self._set_state(current, "idle", now, now)

    def _plan_counting(self, current: int | None, now: float) -> None:
        """A counting device plays nothing; its state says what a real one would play (a broadcast's first
        counted packet says ``ip``, see :meth:`_count`)."""
        self.output.set(None, None)
        if current is None:
            self.watchdog.disarm()
            src = self.settings.source
            self._set_state(None, src if src in ("fm", "line") else "idle", now, now)
        elif self.watchdog.fired:
            setting = Watchdog.fallback(str(self.settings.get("fallback") or "fm"), has_fm="fm" in self.caps,
                                        has_content=bool(self.store.cids()))
            self._set_state(current, {"local": "local", "fm": "fm"}.get(setting, "idle"), now, now)
        elif (broadcast := self.broadcasts.get(current)) is not None and broadcast.stored is not None:
            # A stored programme whose time came: it would play from its instant (the state a real one sends).
            start = self.clock.to_local(broadcast.at) if broadcast.at is not None else None
            self._set_state(current, "local", now if start is None else min(start, now), now)

    def _idle_source(self, now: float) -> Source | None:
        src, khz = self.settings.source, self.settings.source_khz
        key = (src, khz)
        if self._idle is not None and self._idle[0] == key:
            return self._idle[1]
        source: Source | None = None
        if src == "fm":
            source = Source(SynthPlayer("fm", now, khz=khz or self.settings.tuned_khz), "fm")
        elif src == "line":
            source = Source(SynthPlayer("line", now), "line")
        elif src == "local":
            source = self._local_programme(now)
        self._idle = (key, source)
        return source

    def _local_programme(self, now: float) -> Source | None:
        programmes = self.store.programmes()
        server_now = self.clock.to_server(now)
        if not programmes or server_now is None:
            return None
        return Source(StoredPlayer(self.store.programme(programmes[-1]), server_now, loop=True), "local")

    def _fallback_source(self, now: float) -> Source | None:
        setting = Watchdog.fallback(
            str(self.settings.get("fallback") or "fm"), has_fm="fm" in self.caps,
            has_content=bool(self.store.programmes()),
        )
        if setting == "local":
            return self._local_programme(now)
        if setting == "fm":
            return Source(SynthPlayer("fm", now, khz=self.settings.fallback_khz or self.settings.tuned_khz), "fm")
        return None

