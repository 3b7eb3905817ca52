"""The reference speaker cluster, sans-I/O: everything a device does, driven by datagrams and the time.

:class:`SpeakerCore` owns a :class:`~loa.protocol.connection.DeviceConnection` and implements the device side of
PROTOCOL.md: ``hello`` on start; every server command of sections 4.2/4.4 (settings, amplifier, source, FM
presets, simulated reboot, prefetch and resumable fetch, ``play`` at a server instant, ``join``/``rotate``/``leave``
with SRTP keys, signed alerts verified before anything plays, board items); clock probes (section 4.7); telemetry
with every key of section 4.8; ``state`` on every change; media reception with jitter buffer, FEC, PLC and NACK
(section 5); arbitration (section 6.2), amplifier pre-roll (6.3) and the watchdog's fallback (5.6). The work is split
by concern into mixins over this class's state: :class:`~loa.devices.commands.CommandHandling` (server commands,
clock probes, beacons), :class:`~loa.devices.broadcasting.BroadcastHandling` (broadcasts, alerts, schedules) and
:class:`~loa.devices.playing.PlayoutHandling` (playout, watchdog, amplifier, ``state``).

Times: every ``now`` is **local seconds on the device's own clock** (any clock that is not stepped); server
times are integer nanoseconds, converted through the clock estimate. Drive it like this::

    core.start(now)
    # for every datagram from the socket:    core.receive_datagram(data, source_address, now)
    # when core.next_timeout() comes:        core.handle_timeout(now)
    # when core.next_playout() comes:        core.play(now)
    # after each of those:                   send core.datagrams_to_send() to the server address

Failure semantics: :meth:`receive_datagram` never raises for any bytes from any address; what it drops is
counted by error name (``statistics().drops``, and telemetry ``drops``). Commands are acknowledged whatever the
outcome (the connection does that); a refused alert is counted by its error name and does not play.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable

from loa import __version__
from loa.devices import reports
from loa.devices.alerts import AlertBook
from loa.devices.amplifier import Amplifier
from loa.devices.broadcasts import Broadcast, Finished
from loa.devices.commands import CommandHandling
from loa.devices.content import ContentStore, MemoryStore
from loa.devices.fetch import Fetcher
from loa.devices.frame import NS, ServerClock
from loa.devices.live import LiveStream
from loa.devices.playing import PlayoutHandling
from loa.devices.playout import Output, PlayoutLog, Source
from loa.devices.probing import ClockProbe
from loa.devices.reports import DeviceStatistics
from loa.devices.settings import CommandOrder, Settings
from loa.devices.sinks import CounterSink, FrameSink
from loa.devices.telemetry import Hardware, ReportSchedule
from loa.devices.watchdog import Watchdog
from loa.protocol.beacon import BeaconLimiter
from loa.protocol.connection import DeviceConnection
from loa.protocol.control import (
    Bye,
    Hello,
    Join,
    Message,
    Play,
    PlayedFrame,
    Rtcp,
    SignedAlert,
    SignedAlertCancel,
    Telemetry,
    TelemetryValues,
)
from loa.protocol.datagram import classify
from loa.protocol.errors import LocalProtocolError, RemoteProtocolError
from loa.protocol.noise import x25519_public
from loa.protocol.priority import Arbiter
from loa.protocol.rtcp import GenericNack, build_rtcp

__all__ = ["DEFAULT_CAPS", "DeviceStatistics", "SpeakerCore"]

Address = tuple[str, int]

DEFAULT_CAPS = ("fm", "line", "mic", "amp", "gps", "cell", "battery", "multicast")
MODEL = "loa reference speaker"
PLAYED_FLUSH_S = 0.25
DEADLINE_MARGIN = 2e-6  # local seconds added to server-time deadlines, beyond every conversion rounding
RECENT_STATES = 8  # states a device remembers in recent_states


class SpeakerCore(PlayoutHandling, CommandHandling):
    """A reference speaker cluster; see the module docstring.

    ``static_private`` is the device's X25519 key; ``server_public`` the server's; ``authority_keys`` the Ed25519
    public keys alerts must be signed with; ``server_address`` the address media may come from. ``sink``
    receives the output (default: a :class:`~loa.devices.sinks.CounterSink`); ``store`` holds content
    (default: in memory); ``kind`` and ``caps`` are what ``hello`` says (an e-board: ``"board"``, ``("text",
    "image")``); ``test_mode`` sends ``played`` reports (the conformance hook). ``lead`` plays frames
    that many seconds before their instant (a sound card's buffer); ``batch`` lets frames be handed out up to
    that late in one go (cheap fleets: counting needs no punctuality). ``count_only`` makes a load-generating
    device for big fleets: RTP packets of joined SSRCs are counted (packets, bytes, sequence gaps) without
    authentication, jitter buffer or playout, and it probes the server's clock on the spec's base schedule of
    one probe a second from the start (a decoding device probes 4 times a second until its estimate is ready);
    control, alerts and everything else are as on a real device.
    """

    def __init__(
        self,
        *,
        static_private: bytes,
        server_public: bytes,
        authority_keys: Iterable[bytes] = (),
        server_address: Address,
        sink: FrameSink | None = None,
        store: ContentStore | None = None,
        settings: Settings | None = None,
        model: str = MODEL,
        fw: str = __version__,
        caps: tuple[str, ...] = DEFAULT_CAPS,
        kind: str = "speaker",
        token: str | None = None,
        test_mode: bool = False,
        lead: float = 0.0,
        batch: float = 0.0,
        count_only: bool = False,
        log_limit: int | None = 200_000,
        true_time: Callable[[float], float] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        rng: random.Random | None = None,
        timestamp_source: Callable[[float], int] | None = None,
    ) -> None:
        self._static = static_private
        self._server_public = server_public
        self.server_address = server_address
        self.sink: FrameSink = sink if sink is not None else CounterSink()
        self.store = store if store is not None else MemoryStore()
        self.settings = settings if settings is not None else Settings()
        self.alerts = AlertBook(authority_keys)
        self.beacons = BeaconLimiter()
        self._notice_key: bytes | None = None  # computed at the first restart notice (section 3.16)
        self.restart_notices = 0  # accepted
        self.fetcher = Fetcher(self.store)
        self.log = PlayoutLog(log_limit, true_time=true_time)
        self.model, self.fw, self.caps, self.token = model, fw, caps, token
        self.kind = kind
        self.test_mode = test_mode
        self.lead, self.batch = lead, batch
        self.count_only = count_only
        # When the datagram being handled arrived, on the device clock, if the host knows it (a kernel receive
        # timestamp): a clock exchange's t4 is taken from it, as the spec asks of t2 (section 4.7).
        self.received_at: float | None = None
        self._random_bytes = random_bytes
        self._rng = rng if rng is not None else random.Random(int.from_bytes(random_bytes(8), "big"))
        self._timestamp_source = timestamp_source
        self._last_timestamp = -1
        self.reboots = 0
        self.hardware = Hardware.simulated(self._public())
        self._out: list[bytes] = []
        self._now = 0.0  # the latest time any call passed in
        self._timeout: float | None = None  # next_timeout() and next_playout(), valid until an input changes them
        self._playout: float | None = None
        self._timeout_valid = self._playout_valid = False
        self._started = False
        self._boot_runtime(0.0)

    # -- lifetime ----------------------------------------------------------------------------------------------

    def _public(self) -> bytes:
        return x25519_public(self._static)

    @property
    def public_key(self) -> bytes:
        return self.conn.session.public_key

    def _timestamp(self, now: float) -> int:
        proposal = self._timestamp_source(now) if self._timestamp_source is not None else round(now * NS)
        self._last_timestamp = max(proposal, self._last_timestamp + 1)
        return self._last_timestamp

    def _boot_runtime(self, now: float) -> None:
        """Everything that does not survive a reboot, fresh (a new ``boot`` value)."""
        self.conn = DeviceConnection(
            static_private=self._static,
            server_public=self._server_public,
            random_bytes=self._random_bytes,
            rng=self._rng.random,
            timestamp_source=self._timestamp,
        )
        self.clock = ServerClock(ahead=self.lead)  # frames up to now + lead may be with the sink already
        self.order = CommandOrder()
        self.arbiter = Arbiter()
        self.broadcasts: dict[int, Broadcast] = {}
        self.finished = Finished()
        self._by_ssrc: dict[int, LiveStream] = {}
        self._handing_over: dict[int, Broadcast] = {}  # forgotten, but the output still plays out of them
        self._pending_emergency: dict[int, tuple[Join, float]] = {}
        self._scheduled: dict[int, Play] = {}
        self._deferred_alerts: list[tuple[SignedAlert | SignedAlertCancel, bool]] = []  # (message, by beacon)
        self._draining: dict[int, float] = {}
        self.path_extra_ns = 0  # the extra delay the next live broadcast starts with (LiveStream.path_extra_ns)
        self.probe = ClockProbe(self.clock, fast=not self.count_only)
        self._rtcp_ssrc = self._rng.getrandbits(32)
        self.report = ReportSchedule(float(self.settings.get("telemetry_s") or 60), now)
        self._played: list[PlayedFrame] = []
        self._played_since: float | None = None
        self.drop_counts: Counter[str] = Counter()  # dropped input by error name (telemetry `drops`)
        self.retired: Counter[str] = Counter()  # counters of live streams that are gone
        self.loss_seen = (0, 0)  # (gaps, expected) at the last telemetry report, for its `loss`
        self.storage_fault = False
        self.watchdog = Watchdog()
        self._current_since: float | None = None
        self.amp = Amplifier()
        self._reboot_at: float | None = None
        self._reconnect_at: float | None = None
        self._last_stall_probe = -1e18
        self.alerts_accepted = 0
        self.alerts_refused: Counter[str] = Counter()  # alerts and cancels refused, by error (also in drops)
        self.state: tuple[int | None, str] | None = None  # (bid, src) of the last `state` sent
        # the last RECENT_STATES of them, oldest first: what a host that looks now and then (a fleet's status)
        # reads, so that a state held for less than its interval is not missed
        self.recent_states: deque[tuple[int | None, str]] = deque(maxlen=RECENT_STATES)
        self.state_since = 0
        self._idle: tuple[tuple[str, int | None], Source | None] | None = None
        self.boot_at = now
        self.output = Output(self.sink, self.log, audible=self._audible, volume=lambda: self.settings.volume)
        self.output.on_entry = self._on_played if self.test_mode else None

    @property
    def boot(self) -> int:
        return self.conn.session.boot

    def start(self, now: float) -> None:
        """Start the firmware: connect and queue ``hello`` (it goes out on the first session)."""
        if self._started:
            raise LocalProtocolError("the device is already started")
        self._started = True
        self._stale()
        self._now = now
        self.boot_at = now
        self.report = ReportSchedule(float(self.settings.get("telemetry_s") or 60), now)
        self.conn.connect(now)
        self._send(Hello(kind=self.kind, model=self.model, fw=self.fw, caps=self.caps, token=self.token), now)
        self._plan(now)
        self._flush()

    def reboot(self, now: float) -> None:
        """Restart now (as ``reboot`` does after its delay): runtime state is lost, settings and content stay."""
        for broadcast in [*self.broadcasts.values(), *self._handing_over.values()]:
            broadcast.close()
        self.conn.close()
        self.reboots += 1
        self._boot_runtime(now)
        self._started = False
        self.start(now)

    def close(self) -> None:
        """Stop: send ``bye`` if a session exists and release decoders; the sink is closed by its owner."""
        if self.conn.connected:
            with contextlib.suppress(LocalProtocolError):
                self.conn.send(Bye(reason="shutting down"), self._now)
            self._flush()
        for broadcast in [*self.broadcasts.values(), *self._handing_over.values()]:
            broadcast.close()

    # -- I/O surface -------------------------------------------------------------------------------------------

    def set_server_address(self, address: Address) -> None:
        self.server_address = address
        self._stale()

    def datagrams_to_send(self) -> list[bytes]:
        """Datagrams for the server address, oldest first."""
        self._flush()
        out, self._out = self._out, []
        if out:
            self._stale()  # a confirmation keepalive sealed just now moves the session's timers
        return out

    def _flush(self) -> None:
        self._out += self.conn.datagrams_to_send()

    def groups(self) -> set[str]:
        """Multicast groups (``"addr:port"``) of joined broadcasts: the I/O layer joins exactly these."""
        return {b.live.group for b in self.broadcasts.values() if b.live is not None and b.live.group}

    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        """One datagram from ``source`` (``group``: it arrived on that joined multicast group). Never raises."""
        self._now = now
        if self.count_only and source == self.server_address and self._count(data, now):
            return
        self._stale()
        try:
            kind = classify(data)
        except RemoteProtocolError as exc:
            self.drop_counts[type(exc).__name__] += 1
            return
        if kind == "loa":
            self._on_events(self.conn.receive_datagram(data, now), now)
        elif kind == "beacon":
            self._on_beacon(data, source, now)
        elif kind == "notice":
            self._on_notice(data, source, now)
        elif source != self.server_address and (group is None or group not in self.groups()):
            self.drop_counts["UnknownKeyError"] += 1
        else:
            self._on_media(data, kind == "rtp", now)
        self._after(now)

    def _count(self, data: bytes, now: float) -> bool:
        """The counting path of a ``count_only`` device: True when ``data`` was an RTP packet and is counted (or
        dropped) without any timer changing; False sends it down the general path."""
        if not (12 <= len(data) <= 1200 and 0x80 <= data[0] <= 0xBF and not 192 <= data[1] <= 223):
            return False
        stream = self._by_ssrc.get(int.from_bytes(data[8:12], "big"))
        if stream is None:
            self.drop_counts["UnknownKeyError"] += 1
            return True
        stream.count(data, now)
        if stream.bid != self.arbiter.current or (self.state == (stream.bid, "ip") and not self.watchdog.fired):
            return True
        self._stale()
        if self.watchdog.packet():
            self._on_watchdog_cleared(now)
        self._set_state(stream.bid, "ip", now, now)
        self._flush()
        return True

    def _stale(self) -> None:
        self._timeout_valid = self._playout_valid = False

    @property
    def timers_changed(self) -> bool:
        """Whether :meth:`next_timeout` or :meth:`next_playout` may have moved since they were last asked."""
        return not (self._timeout_valid and self._playout_valid)

    def _on_media(self, data: bytes, rtp: bool, now: float) -> None:
        minimum = 12 if rtp else 8
        if len(data) < minimum:
            self.drop_counts["TruncatedError"] += 1
            return
        ssrc = int.from_bytes(data[8:12] if rtp else data[4:8], "big")
        stream = self._by_ssrc.get(ssrc)
        if stream is None:
            self.drop_counts["UnknownKeyError"] += 1
            return
        try:
            if not rtp:
                stream.on_rtcp(data, ssrc)
                return
            extra = stream.extra_ns
            nacks = stream.on_rtp(data, ssrc, now, self.clock, self.rtt)
        except RemoteProtocolError as exc:
            self.drop_counts[type(exc).__name__] += 1
            return
        if stream.extra_ns != extra:  # its path is slower than delay_ms: it now plays later (fault "late_path")
            self.report.faults_changed(self.faults(now), now)
        if self.arbiter.current == stream.bid and self.watchdog.packet():
            self._on_watchdog_cleared(now)
        if nacks:
            self._send_nacks(nacks, now)

    def output_due(self) -> float | None:
        """When its acknowledgements (or messages ready) are due to go out (device clock), or None: the part of
        :meth:`next_timeout` a host running many devices serves first (:class:`~loa.devices.FleetHost`)."""
        return self.conn.channel.next_output() if self.conn.connected else None

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timeout` has protocol work (session, probes, telemetry, fetch, schedules...)."""
        if not self._timeout_valid:
            self._timeout = self._compute_timeout()
            self._timeout_valid = True
        return self._timeout

    def _compute_timeout(self) -> float | None:
        times: list[float | None] = [self.conn.next_timeout(), self.probe.next_at, self._reconnect_at]
        if self._reboot_at is not None and not self._emergency_current():
            times.append(self._reboot_at)
        if self.conn.connected:
            if not self._report_blocked():
                times.append(self.report.due)
            rtt = self.rtt
            if self.fetcher.jobs():
                times.append(self.fetcher.next_timeout(rtt))
            for broadcast in self.broadcasts.values():
                if broadcast.live is not None:
                    times += [broadcast.live.next_nack(rtt), broadcast.live.next_key_expiry()]
            if self._played_since is not None:
                times.append(self._played_since + PLAYED_FLUSH_S)
            times.append(self._stall_deadline())
        times += self._draining.values()
        times += [deadline for _, deadline in self._pending_emergency.values()]
        times.append(self.watchdog.deadline(self._current_packet_time(), self._watchdog_s))
        expiry = self.alerts.next_expiry()
        if expiry is not None:
            times.append(self._deadline(expiry))
        later = [t for t in self._schedule_times() if t is not None and t > self._now]  # passed ones are handled
        return min((t for t in times + later if t is not None), default=None)

    def _deadline(self, server_ns: int) -> float | None:
        """The local time by which server time ``server_ns`` has surely come (rounding margin included)."""
        at = self.clock.to_local(server_ns)
        return None if at is None else at + DEADLINE_MARGIN

    def next_playout(self) -> float | None:
        """When :meth:`play` has a frame to hand to the sink."""
        if not self._playout_valid:
            at = self.output.next_time(self.clock)
            self._playout = None if at is None else at - self.lead + self.batch
            self._playout_valid = True
        return self._playout

    def next_event(self) -> float | None:
        times = [self.next_timeout(), self.next_playout()]
        return min((t for t in times if t is not None), default=None)

    def advance(self, now: float) -> None:
        """:meth:`handle_timeout` and :meth:`play` in one (for simulations)."""
        self.handle_timeout(now)
        self.play(now)

    # -- timers ------------------------------------------------------------------------------------------------

    def handle_timeout(self, now: float) -> None:
        self._now = now
        self._stale()
        self._on_events(self.conn.handle_timeout(now), now)
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._reconnect_at = None
            if self.conn.session.state.value == "idle":
                self.conn.connect(now)
        if self._reboot_at is not None and now >= self._reboot_at and not self._emergency_current():
            self.reboot(now)
            return
        if self.probe.next_at is not None and now >= self.probe.next_at:
            self._probe(now)
        for bid, (_, deadline) in list(self._pending_emergency.items()):
            if now >= deadline:
                del self._pending_emergency[bid]
                self.drop_counts["SignatureError"] += 1  # section 8: an emergency join with no accepted alert
                self.alerts_refused["SignatureError"] += 1
        self._check_alert_expiry(now)
        for bid, end in list(self._draining.items()):
            if now >= end:
                self._end(bid, now, at=end)
        self._check_schedules(now)
        if self.watchdog.check(now, self._current_packet_time(), self._watchdog_s):
            self._on_watchdog_fired(now)
        if self.conn.connected:
            rtt = self.rtt
            for broadcast in list(self.broadcasts.values()):
                live = broadcast.live
                if live is not None:
                    live.expire_keys(now)
                    due = live.nack_due(now, rtt)
                    if due:
                        self._send_nacks(due, now)
            self._reindex()
            self._stall_probe(now)
            if self._played_since is not None and now >= self._played_since + PLAYED_FLUSH_S:
                self._flush_played(now)
        self._after(now)

    def _after(self, now: float) -> None:
        """Work that may become possible after any input: fetch requests, a due report, deferred alerts."""
        if self.conn.connected:
            if self.fetcher.jobs():
                for request in self.fetcher.requests_due(now, self.rtt):
                    self._send(request, now)
            if now >= self.report.due:
                self._send_telemetry(now)
        if self._deferred_alerts and self.clock.ready and self.settings.zones:
            deferred, self._deferred_alerts = self._deferred_alerts, []
            for message, beacon in deferred:
                if beacon and isinstance(message, SignedAlert):
                    self._on_alert(message, now, beacon=True)
                else:
                    self._on_message(message, now)
        self._flush()

    # -- outgoing ----------------------------------------------------------------------------------------------

    def _send(self, message: Message, now: float) -> int | None:
        try:
            return self.conn.send(message, now)
        except LocalProtocolError:
            self.drop_counts["SendRefused"] += 1
            return None

    def _send_nacks(self, nacks: list[tuple[int, int]], now: float) -> None:
        if not self.conn.connected:
            return
        by_ssrc: dict[int, list[int]] = {}
        for ssrc, seq in nacks:
            by_ssrc.setdefault(ssrc, []).append(seq)
        packets = [GenericNack(self._rtcp_ssrc, ssrc, tuple(seqs)) for ssrc, seqs in by_ssrc.items()]
        for i in range(0, len(packets), 8):
            self._send(Rtcp(pkt=build_rtcp(packets[i : i + 8])), now)

    # -- reports (see loa.devices.reports) ---------------------------------------------------------------------

    def faults(self, now: float) -> tuple[str, ...]:
        return reports.faults(self)

    def drops(self) -> dict[str, int]:
        return reports.drops(self)

    def stream_state(self) -> str:
        return reports.stream_state(self)

    def telemetry(self, now: float) -> TelemetryValues:
        return reports.telemetry_values(self, now)

    def statistics(self, now: float | None = None) -> DeviceStatistics:
        return reports.device_statistics(self)

    def _report_blocked(self) -> bool:
        """The last report is not acknowledged yet: the next one waits for its ack (section 4.4)."""
        pending = self.report.pending_id
        return pending is not None and not self.conn.channel.is_acked(pending)

    def _send_telemetry(self, now: float) -> None:
        if self._report_blocked():
            return  # the latest snapshot goes when the earlier report is acknowledged
        faults = self.faults(now)
        msg_id = self._send(Telemetry(v=self.telemetry(now)), now)
        self.report.sent(msg_id, faults, now)
