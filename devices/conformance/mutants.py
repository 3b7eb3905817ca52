"""Mutants: the reference device with exactly one defect each, and the exact set of cases each must fail.

They prove that the kit detects what it claims: ``tests/devices/conformance/test_kit.py`` runs every case against
every mutant and asserts that the FAILED set is exactly ``Mutant.fails`` (and that the reference passes all).
Each mutant is a subclass of :class:`~loa.devices.core.SpeakerCore` that changes one behaviour of one instance;
nothing here patches a module, so mutants and the reference can run side by side in one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loa.devices.alerts import AcceptedAlert, AlertBook
from loa.devices.conformance.agents import ReferenceAgent
from loa.devices.core import Address, SpeakerCore
from loa.devices.frame import Frame, ServerClock
from loa.devices.live import LiveStream
from loa.protocol.alert import decode_alert, should_play
from loa.protocol.connection import Connected, ConnectionEvent
from loa.protocol.control import Hello, Join, Message, TelemetryValues, TimeResp
from loa.protocol.errors import SignatureError
from loa.protocol.replay import ReplayWindow
from loa.protocol.restart import NOTICE_SIZE

__all__ = ["MUTANTS", "Mutant"]

CLOCK_ERROR_NS = 25_000_000


class _OpenWindow(ReplayWindow):
    """A replay window that refuses nothing."""

    def check(self, counter: int) -> None:
        return None

    def accept(self, counter: int) -> bool:
        advanced = counter > self._greatest
        self._greatest = max(self._greatest, counter)
        return advanced


class NoReplayWindow(SpeakerCore):
    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        session = self.conn.session
        for keys in (session._current, session._previous):
            if keys is not None and not isinstance(keys.window, _OpenWindow):
                keys.window = _OpenWindow()
        super().receive_datagram(data, source, now, group=group)


class _UnsignedBook(AlertBook):
    def accept(self, body: bytes, sig: bytes, *, now: int, zones: Any, exercise: bool,
               beacon: bool = False) -> AcceptedAlert:
        try:
            return super().accept(body, sig, now=now, zones=zones, exercise=exercise, beacon=beacon)
        except SignatureError:
            alert = decode_alert(body)
            pair = (alert.kid, alert.id)
            self._remember(pair, alert.expires)
            accepted = AcceptedAlert(alert, should_play(alert, exercise))
            self._by_bid[alert.bid] = accepted
            self._by_pair[pair] = alert.bid
            self._copies[bytes(body)] = [pair, beacon, not beacon]
            return accepted


class UnsignedAlerts(SpeakerCore):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alerts.__class__ = _UnsignedBook


class BeaconFromAnywhere(SpeakerCore):
    def _on_beacon(self, data: bytes, source: Address, now: float) -> None:
        super()._on_beacon(data, self.server_address, now)


class UncheckedNotice(SpeakerCore):
    """Acts on any restart notice from the server's address: no boot or mac check (section 3.16)."""

    def _on_notice(self, data: bytes, source: Address, now: float) -> None:
        if source == self.server_address and self.conn.connected and len(data) == NOTICE_SIZE:
            self.restart_notices += 1
            self.probe.disconnected()
            self.conn.close()
            self.conn.connect(now)


class LevelBlind(SpeakerCore):
    def _on_join(self, message: Join, now: float) -> None:
        super()._on_join(dataclasses.replace(message, lvl=0), now)


class _NoFecLive(LiveStream):
    def take(self, now: float, clock: ServerClock, decode: bool) -> Frame | None:
        frame = super().take(now, clock, decode)
        if frame is not None and frame.kind == "fec":
            self._counts["fec"] -= 1
            self._counts["plc"] += 1
            frame.kind = "plc"
            frame.pcm = self._conceal(frame.samples) if decode else None
        return frame


class _WrapBlindLive(LiveStream):
    _raw_highest = -1

    def on_rtp(self, data: bytes, ssrc: int, now: float, clock: ServerClock, rtt: float) -> list[tuple[int, int]]:
        seq = int.from_bytes(data[2:4], "big") if len(data) >= 4 else 0
        if seq < self._raw_highest - 1000:  # compares numerically: a wrapped number looks ancient
            self._counts["late"] += 1
            return []
        self._raw_highest = max(self._raw_highest, seq)
        return super().on_rtp(data, ssrc, now, clock, rtt)


class _LiveMutant(SpeakerCore):
    live_class: type[LiveStream] = LiveStream

    def _on_join(self, message: Join, now: float) -> None:
        super()._on_join(message, now)
        for broadcast in self.broadcasts.values():
            if broadcast.live is not None and type(broadcast.live) is LiveStream:
                broadcast.live.__class__ = self.live_class
        self._reindex()


class NoFec(_LiveMutant):
    live_class = _NoFecLive


class SeqWrapBlind(_LiveMutant):
    live_class = _WrapBlindLive


class _NoLatePathLive(LiveStream):
    def _late(self, by: float) -> None:
        return None  # every late packet is dropped, however many in a row


class NoLatePath(_LiveMutant):
    live_class = _NoLatePathLive


class _NoPathMemoryLive(LiveStream):
    def path_extra_ns(self, kept_ns: int) -> int:
        return 0  # every broadcast starts without an extra delay, however slow the last one found the path


class NoPathMemory(_LiveMutant):
    live_class = _NoPathMemoryLive


class NoHeardPath(SpeakerCore):
    def _heard_extra_ns(self, delay_ms: int) -> int:
        return 0  # a broadcast starts with the extra its last one carried over, not what the clock probes heard


class ClockOffset(SpeakerCore):
    def _on_time_resp(self, message: TimeResp, now: float) -> None:
        bent = TimeResp(t1=message.t1, t2=message.t2 + CLOCK_ERROR_NS, t3=message.t3 + CLOCK_ERROR_NS)
        super()._on_time_resp(bent, now)


class NoClockTelemetry(SpeakerCore):
    def telemetry(self, now: float) -> TelemetryValues:
        return dataclasses.replace(super().telemetry(now), clk_offset_ns=None, clk_drift_ppm=None, clk_err_ns=None)


class NoNack(SpeakerCore):
    def _send_nacks(self, nacks: list[tuple[int, int]], now: float) -> None:
        return None


class Amplifier(SpeakerCore):
    """Answers any datagram from a stranger with twice its size (a reflector)."""

    _answered = 0

    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        if source != self.server_address and self._answered < 64:
            self._answered += 1
            family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
                sock.sendto((data * 2)[:1200], source)
        super().receive_datagram(data, source, now, group=group)


class HelloEverySession(SpeakerCore):
    def _on_events(self, events: list[ConnectionEvent], now: float) -> None:
        super()._on_events(events, now)
        if any(isinstance(e, Connected) for e in events) and self.conn.channel.statistics().sent > 0:
            hello: Message = Hello(kind="speaker", model=self.model, fw=self.fw, caps=self.caps)
            self._send(hello, now)


@dataclass(frozen=True)
class Mutant:
    name: str
    defect: str
    core_class: type[SpeakerCore]
    fails: frozenset[str]

    def agent(self) -> ReferenceAgent:
        return ReferenceAgent(name=f"mutant:{self.name}", core_class=self.core_class)


def _mutants(rows: Iterable[tuple[str, str, type[SpeakerCore], set[str]]]) -> dict[str, Mutant]:
    return {name: Mutant(name, defect, cls, frozenset(fails)) for name, defect, cls, fails in rows}


MUTANTS: dict[str, Mutant] = _mutants([
    ("no-replay-window", "accepts transport counters it has seen, and any counter (no replay window)",
     NoReplayWindow, {"3.7.1", "3.7.2"}),
    ("unsigned-alerts", "plays an alert whose signature does not verify", UnsignedAlerts, {"6.4.2", "6.4.11"}),
    ("beacon-from-anywhere", "takes alert beacons from any source address", BeaconFromAnywhere, {"6.4.12"}),
    ("level-blind", "ignores the issuing level of a live join (wrong preemption order)", LevelBlind,
     {"6.2.2", "6.2.3", "6.2.4", "6.2.6", "6.2.7", "6.2.8"}),
    ("no-fec", "conceals a lost frame instead of decoding the next packet's in-band FEC", NoFec, {"5.5.3"}),
    ("seq-wrap", "compares RTP sequence numbers without wrap-around (drops packets after 65535)", SeqWrapBlind,
     {"5.1.1"}),
    ("no-late-path", "drops every late packet, so a path slower than delay_ms plays nothing", NoLatePath,
     {"5.6.5"}),
    ("no-path-memory", "forgets the extra delay of a slow path with each broadcast", NoPathMemory, {"5.6.6"}),
    ("no-heard-path", "starts a broadcast without the extra delay its clock probes' round trip asks for",
     NoHeardPath, {"5.6.7"}),
    # 25 ms early in true time: its played reports (at = what it believes) arrive before the instants they name
    ("clock-offset", "its clock estimate is off by a constant 25 ms", ClockOffset,
     {"4.7.2", "4.7.4", "5.1.1", "5.1.2", "5.2.1", "5.3.1", "5.4.1", "5.5.1", "5.5.2", "5.6.1", "7.2.1", "7.2.2"}),
    ("no-clock-telemetry", "omits clk_offset_ns, clk_drift_ppm and clk_err_ns from telemetry", NoClockTelemetry,
     {"4.7.2", "4.7.4", "4.8.1"}),
    ("no-nack", "never sends NACKs", NoNack, {"5.5.2"}),
    ("amplifier", "answers datagrams from unverified addresses with twice their size", Amplifier,
     {"9.0.1", "8.0.3"}),
    ("hello-every-session", "sends hello again on every new session of the same boot", HelloEverySession,
     {"7.6.1"}),
    ("unchecked-notice", "acts on any restart notice from the server's address (no boot or mac check)",
     UncheckedNotice, {"3.16.1"}),
])
