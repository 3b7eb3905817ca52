"""Commands and session events at the reference device (PROTOCOL.md sections 4.4, 4.7, 6.4.2): what each server
message does, clock probing, and alert beacons. A part of :class:`~loa.devices.core.SpeakerCore` (a mixin over its
state, like :class:`~loa.devices.broadcasting.BroadcastHandling`), kept apart so that each file stays readable.

Settings-type commands (``config``, ``volume``, ``mute``, ``amp``, ``source``, ``fm_presets``, board items) pass
through :class:`~loa.devices.settings.CommandOrder`, so that an older command delivered late never undoes a newer
one; ``prefetch`` and ``chunk`` drive the resumable fetch; ``bye`` closes the session and reconnects after
``JOIN_RETRY`` + 0-500 ms. An alert beacon is taken only from the server's address and within the verification bound,
then verified and acted on like an ``alert`` message. A restart notice (section 3.16) from the server's address,
for the server boot of the current session and with a valid mac, makes the device handshake with the restarted
server at once.
"""

from __future__ import annotations

import abc
import dataclasses
import random
from typing import TYPE_CHECKING

from loa.devices.broadcasting import BroadcastHandling
from loa.protocol.beacon import BeaconLimiter, parse_beacon
from loa.protocol.connection import Connected, ConnectionEvent, DeviceConnection, Disconnected, Received
from loa.protocol.control import (
    Amp,
    Board,
    BoardClear,
    Bye,
    Chunk,
    Config,
    FmPresets,
    Have,
    Join,
    Leave,
    Message,
    Mute,
    Play,
    Prefetch,
    Reboot,
    Rotate,
    SignedAlert,
    SignedAlertCancel,
    TimeResp,
    Volume,
)
from loa.protocol.control import Source as SourceCommand
from loa.protocol.errors import RemoteProtocolError, UnknownKeyError
from loa.protocol.restart import check_notice, notice_key, parse_notice
from loa.protocol.session import JOIN_JITTER, JOIN_RETRY

if TYPE_CHECKING:
    from loa.devices.fetch import Fetcher, FetchOutcome
    from loa.devices.probing import ClockProbe
    from loa.devices.telemetry import ReportSchedule

__all__ = ["HANDLERS", "CommandHandling"]

Address = tuple[str, int]


class CommandHandling(BroadcastHandling):
    """The command half of :class:`~loa.devices.core.SpeakerCore`: its methods run on the core's state, which the
    core creates (the annotations below); the abstract methods are the core's."""

    conn: DeviceConnection
    probe: ClockProbe
    report: ReportSchedule
    fetcher: Fetcher
    beacons: BeaconLimiter
    server_address: Address
    restart_notices: int
    _notice_key: bytes | None
    _static: bytes
    _server_public: bytes
    storage_fault: bool
    received_at: float | None
    _rng: random.Random
    _rtcp_ssrc: int
    _reboot_at: float | None
    _reconnect_at: float | None

    @abc.abstractmethod
    def _send(self, message: Message, now: float) -> int | None: ...

    @abc.abstractmethod
    def _send_state(self, now: float) -> None: ...

    @abc.abstractmethod
    def _stale(self) -> None: ...

    @abc.abstractmethod
    def faults(self, now: float) -> tuple[str, ...]: ...

    def _on_beacon(self, data: bytes, source: Address, now: float) -> None:
        """An alert beacon (section 6.4.2): from the server's address only; an alert already accepted is not
        checked again; past the verification bound it is dropped (its reliable copy follows); else it is
        verified and acted on exactly as an ``alert`` message, and nothing is sent back."""
        if source != self.server_address:
            self.drop_counts["UnknownKeyError"] += 1
            return
        try:
            body, sig = parse_beacon(data)
        except RemoteProtocolError as exc:
            self.drop_counts[type(exc).__name__] += 1
            return
        if self.alerts.other_copy(body, beacon=True):
            return
        if not self.beacons.allow(now):
            self.drop_counts["RateLimitError"] += 1
            return
        self._stale()
        self._on_alert(SignedAlert(body=body, sig=sig), now, beacon=True)

    def _on_notice(self, data: bytes, source: Address, now: float) -> None:
        """A restart notice (section 3.16): from the server's address only, structure, a current session, its
        server boot, the mac; then the session is gone with the old server: handshake with the new one now."""
        try:
            if source != self.server_address:
                raise UnknownKeyError("restart notice from an address other than the server's")
            parse_notice(data)
            boot = self.conn.server_boot
            if not self.conn.connected or boot is None:
                raise UnknownKeyError("restart notice without a current session")
            if self._notice_key is None:
                self._notice_key = notice_key(self._static, self._server_public)
            check_notice(self._notice_key, data, boot)
        except RemoteProtocolError as exc:
            self.drop_counts[type(exc).__name__] += 1
            return
        self.restart_notices += 1
        self._stale()
        self.probe.disconnected()
        self.conn.close()
        self.conn.connect(now)

    def _on_events(self, events: list[ConnectionEvent], now: float) -> None:
        for event in events:
            if isinstance(event, Received):
                self._on_message(event.message, now)
            elif isinstance(event, Connected):
                if event.peer_restarted:
                    self.order.reset()
                    self._send_state(now)  # the restarted server lost what we play
                self._rtcp_ssrc = self._rng.getrandbits(32)
                self.probe.connected(now, rtt=self.conn.session.handshake_rtt)
            elif isinstance(event, Disconnected):
                self.probe.disconnected()

    def _on_message(self, message: Message, now: float) -> None:
        self._stale()
        name = HANDLERS.get(type(message))
        if name is not None:
            getattr(self, name)(message, now)

    def _on_time_resp(self, message: TimeResp, now: float) -> None:
        # True when the estimate just became ready: faults change, playout can start
        if self.probe.answer(message, now, t4_at=self.received_at):
            self.report.faults_changed(self.faults(now), now)
            self._plan(now)

    def _probe(self, now: float) -> None:
        if not self.conn.connected:
            self.probe.disconnected()
            return
        request = self.probe.due(now)
        if request is None:  # a silent server (restarted, or our NAT binding is gone): handshake again now
            self.conn.close()
            self.conn.connect(now)
            return
        self._send(request, now)

    @property
    def rtt(self) -> float:
        return self.probe.rtt

    def _on_config(self, message: Config, now: float) -> None:
        values = message.values
        names = [f.name for f in dataclasses.fields(values) if getattr(values, f.name) is not None]
        accepted = self.order.accept_keys([("config", n) for n in names], message.id)
        changed = self.settings.apply_config(values, {str(key[1]) for key in accepted})
        if "telemetry_s" in changed:
            self.report.set_interval(float(self.settings.get("telemetry_s")), now)
        if {"fallback", "fallback_khz"} & set(changed) and self.watchdog.fired:
            self._plan(now)

    def _on_volume(self, message: Volume, now: float) -> None:
        if self.order.accept(("volume", None), message.id):
            self.settings.volume_level = message.level

    def _on_mute(self, message: Mute, now: float) -> None:
        if self.order.accept(("mute", None), message.id):
            self.settings.muted = message.on

    def _on_amp(self, message: Amp, now: float) -> None:
        if self.order.accept(("amp", None), message.id):
            self.settings.amp_held = message.on
            self.settings.amp_preroll_ms = message.preroll_ms
            self._update_amp(now)

    def _on_source(self, message: SourceCommand, now: float) -> None:
        if self.order.accept(("source", None), message.id):
            self.settings.source = message.src
            self.settings.source_khz = message.freq_khz
            if self.arbiter.current is None:
                self._plan(now)

    def _on_fm_presets(self, message: FmPresets, now: float) -> None:
        if self.order.accept(("fm_presets", None), message.id):
            self.settings.fm_presets = message.presets

    def _on_reboot(self, message: Reboot, now: float) -> None:
        self._reboot_at = now + message.delay_ms / 1000

    def _on_prefetch(self, message: Prefetch, now: float) -> None:
        if self.order.accept(("cid", message.cid), message.id):
            outcome = self.fetcher.start(message.cid, message.size, message.name)
            if outcome is not None:
                self._fetched(outcome, now)

    def _on_chunk(self, message: Chunk, now: float) -> None:
        outcome = self.fetcher.on_chunk(message)
        if outcome is not None:
            self._fetched(outcome, now)

    def _fetched(self, outcome: FetchOutcome, now: float) -> None:
        self.storage_fault = not outcome.ok and outcome.reason == "storage"
        self._send(Have(cid=outcome.cid, ok=outcome.ok), now)
        self.report.faults_changed(self.faults(now), now)
        if outcome.ok:
            self._check_schedules(now)

    def _on_board(self, message: Board, now: float) -> None:
        if self.order.accept(("item", message.item), message.id):
            self.settings.boards[message.item] = message  # a speaker stores items; it has nothing to show them on

    def _on_board_clear(self, message: BoardClear, now: float) -> None:
        if self.order.accept(("item", message.item), message.id):
            self.settings.boards.pop(message.item, None)

    def _on_bye(self, message: Bye, now: float) -> None:
        self.conn.close()
        self.probe.next_at = None
        # without a session, as an unanswered init would be retried (PROTOCOL.md 3.11); the jitter keeps a fleet
        # that a server's shutdown said bye to from coming back in one burst
        self._reconnect_at = now + JOIN_RETRY + self._rng.uniform(0.0, JOIN_JITTER)


#: Server -> device message type -> the method that handles it.
HANDLERS: dict[type, str] = {
    TimeResp: "_on_time_resp",
    Config: "_on_config",
    Volume: "_on_volume",
    Mute: "_on_mute",
    Amp: "_on_amp",
    SourceCommand: "_on_source",
    FmPresets: "_on_fm_presets",
    Reboot: "_on_reboot",
    Prefetch: "_on_prefetch",
    Chunk: "_on_chunk",
    Play: "_on_play",
    Join: "_on_join",
    Rotate: "_on_rotate",
    Leave: "_on_leave",
    SignedAlert: "_on_alert",
    SignedAlertCancel: "_on_alert_cancel",
    Board: "_on_board",
    BoardClear: "_on_board_clear",
    Bye: "_on_bye",
}
