"""The streamer's sans-I/O core: device sessions, the registry, and the broadcasts it drives.

:class:`StreamerCore` takes datagrams and ``now`` (float seconds on the caller's monotonic clock) and returns
datagrams, like the protocol objects it is built on; the I/O service (:mod:`loa.streamer.service`) and the tests
on the fake network are thin loops around it. Server time (PROTOCOL.md section 1) is ``epoch_ns + now * 10^9``:
the caller picks ``epoch_ns`` once so that server time follows the wall clock at start and never steps.

It is composed of :class:`~loa.streamer.sessions.DeviceSessions` (sessions, enrolment, sending; it calls back the
``on_*`` and :meth:`send_state` hooks here), :class:`~loa.streamer.live.LiveBroadcasts` (live streams, alerts,
key rotation), :class:`~loa.streamer.plays.ScheduledPlays` (stored programmes),
:class:`~loa.streamer.boards.BoardItems` (e-board items) and :class:`~loa.streamer.reports.DeviceReports` (what
devices send after their hello: clock probes, reports, fetches, NACKs).

The I/O surface:

* :meth:`receive_datagram`, :meth:`datagrams_to_send`, :meth:`next_timeout`, :meth:`handle_timeout`: control
  traffic, NACK retransmissions (the same SRTP bytes, unicast) and every timer except the frame clocks;
* :meth:`live_broadcasts`, :meth:`next_frame_time`, :meth:`produce_frame`, :meth:`destinations`,
  :meth:`attach_sink`: the media plane, one frame clock per live broadcast; each frame is encoded, packetised
  and protected once and the caller sends the same bytes to every destination (a fan-out mirrors them).

The control plane's surface: :meth:`add_device`, :meth:`update_device`, :meth:`remove_device`,
:meth:`issue_token`, :meth:`set_volume`, :meth:`send_command`; :meth:`start_broadcast`, :meth:`stop_broadcast`,
:meth:`trigger_alert`, :meth:`cancel_alert`, :meth:`publish_content`, :meth:`schedule_play`,
:meth:`allocate_bid`; observers :meth:`device_status`, :meth:`devices`, :meth:`broadcast_status`,
:meth:`broadcasts`, :meth:`statistics`, :meth:`events`; :meth:`close`.

Failure semantics: :meth:`receive_datagram` never raises for any bytes; what it cannot use is counted in
``statistics().drops`` by error name and changes nothing. Control-plane calls validate first and raise
``ValueError`` subclasses (``ZoneError``, ``RegistryError``, ``AlertError``, ``ContentError``) or ``KeyError``
(unknown bid or device) with nothing changed. Nothing is sent to an address before a datagram from it
authenticated, except the session layer's handshake answers (96 or 52 bytes to a 148-byte init).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import random
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.protocol.alert import PublicKey
from loa.protocol.control import (
    Bye,
    Config,
    ConfigValues,
    Message,
    Volume,
)
from loa.protocol.datagram import classify
from loa.protocol.errors import RemoteProtocolError
from loa.streamer.boards import BoardItems
from loa.streamer.content import ContentError, ContentStore
from loa.streamer.destinations import Sink
from loa.streamer.live import LiveBroadcasts
from loa.streamer.plays import ScheduledPlays
from loa.streamer.registry import DeviceEntry, Registry, RegistryError
from loa.streamer.reports import DeviceReports
from loa.streamer.sessions import DeviceSessions
from loa.streamer.settings import Settings
from loa.streamer.sources import Source
from loa.streamer.status import (
    BroadcastStatus,
    DeviceRuntime,
    DeviceStatus,
    StreamerEvent,
    StreamerStatistics,
)
from loa.streamer.zones import ZoneError, ZoneTree

__all__ = ["Settings", "StreamerCore", "parse_group"]

Address = tuple[str, int]
MAX_ZONE_DEPTH = 8
MAX_EVENTS = 65_536  # undrained events beyond this are dropped, oldest first
_NS = 1_000_000_000
_U32 = 0xFFFFFFFF
_ALERT_DEFAULTS: dict[str, Any] = {  # trigger_alert's keyword defaults, for announce_alert
    "body": None, "sig": None, "signing_key": None, "zones": (), "cls": 2, "lvl": 2, "status": "actual",
    "alert_id": None, "text": None, "ttl_s": None, "preroll_ms": 0, "policy": "resume", "name": "",
}


def parse_group(text: str) -> Address:
    """A multicast group ``ADDR:PORT`` (``[V6]:PORT`` for IPv6); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not sep or address is None or not address.is_multicast or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a multicast group is ADDR:PORT with a multicast address, not {text!r}")
    return (str(address), int(port))


class StreamerCore:
    """One streamer node: sessions with many devices, their live broadcasts, alerts and stored programmes."""

    def __init__(
        self,
        *,
        static_private: bytes,
        zones: ZoneTree,
        registry: Registry | None = None,
        content: ContentStore | None = None,
        authorities: Mapping[bytes, PublicKey] | None = None,
        groups: Mapping[str, str] | None = None,
        settings: Settings | None = None,
        epoch_ns: int = 0,
        send_clock: Callable[[], float] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        rng: random.Random | None = None,
        first_bid: int = 1,
        boot: int | None = None,
    ) -> None:
        for zone in zones:
            if len(zones.path(zone.code)) > MAX_ZONE_DEPTH:
                raise ZoneError(f"zone {zone.code!r} lies {len(zones.path(zone.code))} levels deep; a device's "
                                f"zone path holds at most {MAX_ZONE_DEPTH}")
        parsed_groups: dict[str, Address] = {}
        for code, group in (groups or {}).items():
            zones.get(code)
            parsed_groups[code] = parse_group(group)
        self.zones = zones
        self.registry = registry if registry is not None else Registry(zones.__contains__)
        self.settings = settings or Settings()
        self.epoch_ns = epoch_ns
        rng = rng or random.SystemRandom()
        self._next_bid = first_bid & _U32 or 1
        self._used_bids: set[int] = set()
        self._events: deque[StreamerEvent] = deque(maxlen=MAX_EVENTS)
        self._drops: Counter[str] = Counter()
        self._in = self._bytes_in = self._sent = self._bytes_out = 0
        self._media_flush = False
        self.sessions = DeviceSessions(self, static_private=static_private, registry=self.registry,
                                       server_time=self.server_time, events=self._events, drops=self._drops,
                                       random_bytes=random_bytes, rng=rng, boot=boot)
        self.live = LiveBroadcasts(
            self.sessions, zones=zones, registry=self.registry, settings=self.settings, groups=parsed_groups,
            authorities=dict(authorities or {}), server_time=self.server_time, allocate_bid=self.allocate_bid,
            claim_bid=self._claim_bid, events=self._events, drops=self._drops, rng=rng, random_bytes=random_bytes,
        )
        self.plays = ScheduledPlays(self.sessions, zones=zones, registry=self.registry, settings=self.settings,
                                    content=content, allocate_bid=self.allocate_bid, events=self._events,
                                    server_time=self.server_time)
        self.boards = BoardItems(self.sessions, zones=zones, registry=self.registry, content=content,
                                 server_time=self.server_time)
        self.reports = DeviceReports(self.sessions, live=self.live, plays=self.plays, settings=self.settings,
                                     events=self._events, drops=self._drops, server_time=self.server_time,
                                     send_clock=send_clock)

    # -- time and identity -------------------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self.sessions.conn.endpoint.public_key

    @property
    def content(self) -> ContentStore | None:
        return self.plays.content

    @property
    def wants_flush(self) -> bool:
        """True when messages or retransmissions were queued since :meth:`datagrams_to_send` last ran (a frame
        clock checks it after producing a frame that ended a broadcast or started a rotation)."""
        return self._media_flush or bool(self.reports.retransmissions) or self.sessions.wants_flush

    def server_time(self, now: float) -> int:
        """Server time (ns since 1970) at ``now`` on the caller's clock."""
        return self.epoch_ns + round(now * _NS)

    def allocate_bid(self) -> int:
        """A broadcast id never used by this server run. Ids count up from ``first_bid``: seed it from a clock
        or a persisted counter so that a restarted server does not reuse ids (devices ignore reused ones).

        The counter passes every id it gave, so only the ids claimed from elsewhere (an authority's signed alert)
        ahead of it are remembered, each until the counter passes it: memory does not grow with the broadcasts of
        a long run. (An id would come round again only after 2^32 - 1 broadcasts.)"""
        bid = self._next_bid
        claimed = self._used_bids
        while bid in claimed or bid == 0:
            claimed.discard(bid)
            bid = (bid + 1) & _U32
        self._next_bid = (bid + 1) & _U32
        return bid

    def _claim_bid(self, bid: int) -> None:
        """Take ``bid`` (from :meth:`allocate_bid`, or an authority's signed alert); ValueError if it runs."""
        if bid in self.live or bid in self.plays:
            raise ValueError(f"broadcast id {bid} is in use")
        if (bid - self._next_bid) & _U32 < 1 << 31:  # ahead of the counter (ids behind it were given or passed)
            self._used_bids.add(bid)

    # -- I/O surface -------------------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float, *, arrived: float | None = None) -> None:
        """Process one datagram from ``address`` (``arrived``: when the kernel received it, on the clock of ``now``,
        if the caller knows; a clock probe's t2 is taken from it, PROTOCOL.md section 4.7). Never raises."""
        self._in += 1
        self._bytes_in += len(data)
        try:
            kind = classify(data)
        except RemoteProtocolError as exc:
            self._drops[type(exc).__name__] += 1
            return
        if kind != "loa":  # devices send RTCP inside `rtcp` control messages, never bare RTP/RTCP
            self._drops["UnknownTypeError"] += 1
            return
        self.reports.arrived = None if arrived is None else min(arrived, now)
        try:
            self.sessions.receive(data, address, now)
        finally:
            self.reports.arrived = None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain the queued control datagrams and NACK retransmissions, as ``(datagram, address)`` pairs."""
        out = self.sessions.datagrams_to_send()
        if self.reports.retransmissions:
            out += self.reports.retransmissions
            self.reports.retransmissions = []
        self._media_flush = False
        self._sent += len(out)
        self._bytes_out += sum(len(d) for d, _ in out)
        return out

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timeout` has work; the frame clocks are separate (:meth:`next_frame_time`)."""
        times = [self.sessions.next_timeout(), self.live.next_timeout(), self.plays.next_timeout(),
                 self.boards.next_timeout()]
        return min((t for t in times if t is not None), default=None)

    def set_input_horizon(self, horizon: float | None) -> None:
        """How far the I/O layer has read its input: the arrival time of the latest datagram read while more wait,
        or None once everything that arrived is read. Control retransmissions due after it are held back until
        the input is read that far (at most :data:`~loa.protocol.connection.HOLD_MAX_S`)."""
        self.sessions.conn.set_input_horizon(horizon)

    def handle_timeout(self, now: float) -> None:
        self.sessions.handle_timeout(now)
        self.live.handle_timeout(now)
        self.plays.handle_timeout(now)
        self.boards.handle_timeout(now)

    # -- media plane -------------------------------------------------------------------------------------------

    def live_broadcasts(self) -> list[int]:
        """The bids whose frame clocks run now (live streams and alerts)."""
        return self.live.bids()

    def next_frame_time(self, bid: int) -> float | None:
        """When :meth:`produce_frame` is next due for ``bid``; None once it has ended (or is unknown)."""
        return self.live.next_frame_time(bid)

    def produce_frame(self, bid: int, now: float) -> list[bytes]:
        """The datagrams of ``bid``'s due frame, for every destination (see :class:`LiveBroadcast`).

        When the broadcast ends here (its source finished, or it was stopped) the closing ``SR, SDES, BYE`` is
        returned, members are told ``leave``, and :meth:`next_frame_time` returns None afterwards. A codec
        failure of the source ends the broadcast the same way (counted as ``source_failed``).
        """
        return self.live.produce(bid, now)

    def destinations(self, bid: int) -> list[tuple[Hashable, tuple[Any, ...]]]:
        """``(key, address)`` of every destination of ``bid`` now: members' session addresses and groups."""
        return self.live.destinations(bid)

    def attach_sink(self, bid: int, sink: Sink) -> None:
        """Mirror ``bid``'s destinations into ``sink`` (a Fanout) from now on. KeyError for an unknown bid."""
        self.live.attach_sink(bid, sink)

    # -- SessionHooks ------------------------------------------------------------------------------------------

    def on_online(self, device: bytes, now: float) -> None:
        self.live.device_moved(device)

    def on_offline(self, device: bytes) -> None:
        self.live.device_offline(device)
        self.reports.forget(device)

    def on_moved(self, device: bytes) -> None:
        self.live.device_moved(device)

    def on_acks(self, device: bytes, now: float) -> None:
        if self.live.watching(device):
            self.live.check_acks(device, now)

    def on_enrolled(self, device: bytes, entry: DeviceEntry, now: float) -> None:
        self._resync(device, entry, now)

    def send_state(self, device: bytes, now: float) -> None:
        """Everything a device needs after it (or the server) started (section 4.5)."""
        entry = self.registry.entry(device)
        values = dataclasses.replace(self.settings.config, zones=self.zones.path(entry.zone))
        self.sessions.send(device, Config(values=values), now)
        self.sessions.send(device, Volume(level=self.settings.volume if entry.volume is None else entry.volume),
                           now)
        self.live.send_state(device, entry, now)
        self.plays.send_state(device, now)
        self.boards.send_state(device, entry, now)

    def on_message(self, device: bytes, message: Message, now: float) -> bool:
        """Act on one message of an enrolled device (:class:`~loa.streamer.reports.DeviceReports`)."""
        self.reports.on_message(device, message, now)
        return False

    # -- registry ----------------------------------------------------------------------------------------------

    def add_device(self, key: bytes, zone: str, now: float, *, name: str = "", kind: str = "speaker",
                   enrolled: bool = True, volume: int | None = None) -> DeviceEntry:
        """Enrol a device; it joins the broadcasts of its zone (RegistryError: known key, bad zone or kind)."""
        entry = DeviceEntry(key, zone, name=name, kind=kind, enrolled=enrolled, volume=volume)
        self.registry.add(entry)
        self._resync(key, entry, now)
        return entry

    def update_device(self, key: bytes, now: float, **changes: Any) -> DeviceEntry:
        """Change a device's ``zone``, ``name``, ``kind``, ``volume`` or ``enrolled``. Leaving a broadcast's
        zones, or ``enrolled=False`` (revocation: its sessions end), rotates the keys it held."""
        old, new = self.registry.update(key, **changes)
        self._resync(key, new, now)
        if new.enrolled and self.sessions.runtime(key).state_sent:
            if old.zone != new.zone:
                self.sessions.send(key, Config(values=ConfigValues(zones=self.zones.path(new.zone))), now)
            if old.volume != new.volume and new.volume is not None:
                self.sessions.send(key, Volume(level=new.volume), now)
        return new

    def remove_device(self, key: bytes, now: float) -> None:
        """Forget a device: its sessions end, it leaves its broadcasts, their keys rotate. RegistryError if
        unknown."""
        self.registry.remove(key)
        self._resync(key, None, now)

    def _resync(self, key: bytes, entry: DeviceEntry | None, now: float) -> None:
        if entry is None or not entry.enrolled:
            self.sessions.forget(key, "revoked" if entry is not None else "removed")
        self.live.resync(key, entry, now)
        self.plays.resync(key, entry, now)
        self.boards.resync(key, entry, now)

    def remove_zone(self, code: str) -> None:
        """Forget a zone with no zones and no devices in it, and no broadcast aimed at it. ZoneError otherwise."""
        if any(entry.zone == code for entry in self.registry):
            raise ZoneError(f"zone {code!r} still has devices")
        if any(code in b.zones for b in self.broadcasts()) or code in self.boards.target_zones():
            raise ZoneError(f"zone {code!r} is a target of a running broadcast")
        self.zones.remove(code)

    def move_zone(self, code: str, parent: str | None, now: float) -> None:
        """Move a zone (and what lies below it) under ``parent``; its devices get their new zone path and
        join or leave broadcasts accordingly. ZoneError for an unknown zone, a cycle or too deep a tree."""
        moved = self.zones.subtree(code)
        old = self.zones.get(code).parent
        self.zones.move(code, parent)
        if any(len(self.zones.path(c)) > MAX_ZONE_DEPTH for c in moved):
            self.zones.move(code, old)
            raise ZoneError(f"moving {code!r} under {parent!r} makes the tree deeper than {MAX_ZONE_DEPTH}")
        for key in sorted(self.registry.in_zones(moved, kinds=("speaker", "board"))):
            entry = self.registry.entry(key)
            self._resync(key, entry, now)
            if entry.enrolled and self.sessions.runtime(key).state_sent:
                self.sessions.send(key, Config(values=ConfigValues(zones=self.zones.path(entry.zone))), now)

    def issue_token(self, zone: str, expires_ns: int, *, kind: str = "speaker") -> str:
        """A one-time enrolment token for ``zone``, valid until server time ``expires_ns`` (section 4.5)."""
        return self.registry.issue_token(zone, expires_ns, kind=kind)

    def set_volume(self, devices: Iterable[bytes], level: int, now: float) -> None:
        """Set and send the volume of ``devices`` (kept for their next start). RegistryError, nothing changed,
        if one is unknown or the level is not 0-100."""
        keys = list(devices)
        if not 0 <= level <= 100:
            raise RegistryError(f"volume must be 0-100, not {level}")
        for key in keys:
            self.registry.entry(key)
        for key in keys:
            self.update_device(key, now, volume=level)

    def send_command(self, key: bytes, message: Message, now: float) -> int | None:
        """Send any server-to-device message (mute, source, fm_presets, reboot, board...) to an enrolled device;
        reliable ones wait for its session. Returns the id of a reliable message. RegistryError for an unknown
        device; LocalProtocolError for a message that breaks the schema or an unreliable one without session."""
        self.registry.entry(key)
        msg_id = self.sessions.send_checked(key, message, now)
        self._media_flush = True
        return msg_id

    # -- broadcasts --------------------------------------------------------------------------------------------

    def start_broadcast(self, source: Source, zones: Sequence[str], now: float, *, cls: int = 0, lvl: int = 0,
                        policy: str = "resume", name: str = "", delay_ms: int | None = None) -> int:
        """Start a live broadcast of ``source`` to ``zones`` (each with every zone below it); returns its bid.

        Every enrolled speaker there is sent ``join`` now or when it next connects, and receives the stream from
        its next frame on; the first frame leaves ``settings.start_lead_s`` after the joins.
        """
        return self.live.start(source, zones, now, cls=cls, lvl=lvl, policy=policy, name=name, delay_ms=delay_ms)

    def stop_broadcast(self, bid: int, now: float) -> None:
        """End a live broadcast, alert or scheduled programme now: its members get ``leave``; a live stream
        sends its closing BYE at its next frame. KeyError if it is not running."""
        if bid in self.plays:
            self.plays.stop(bid, now)
        else:
            self.live.stop(bid, now)

    def trigger_alert(self, source: Source, now: float, *, body: bytes | None = None, sig: bytes | None = None,
                      signing_key: Ed25519PrivateKey | None = None, zones: Sequence[str] = (), cls: int = 2,
                      lvl: int = 2, status: str = "actual", alert_id: str | None = None, text: str | None = None,
                      ttl_s: float | None = None, preroll_ms: int = 0, policy: str = "resume",
                      name: str = "") -> int:
        """Send an alert and its audio; returns its bid.

        Pass either ``body`` and ``sig`` signed by an authority (with a bid from :meth:`allocate_bid`), checked
        against the configured authority keys before anything is sent, or a ``signing_key`` and ``zones`` (with
        ``cls``, ``lvl``, ``status``, ``alert_id``, ``text``, ``ttl_s``) to sign it here. Every device in the
        alert's zones gets ``alert``; speakers then ``amp {on, preroll_ms}`` and ``join``. The audio starts
        ``preroll_ms`` after now, silence frames before it; it ends at the alert's expiry at the latest.
        AlertError (refused), ZoneError or ValueError, with nothing sent.
        """
        return self.live.trigger_alert(source, now, body=body, sig=sig, signing_key=signing_key, zones=zones,
                                       cls=cls, lvl=lvl, status=status, alert_id=alert_id, text=text, ttl_s=ttl_s,
                                       preroll_ms=preroll_ms, policy=policy, name=name)

    def announce_alert(self, source: Source, now: float, **options: Any) -> int:
        """The first half of :meth:`trigger_alert` (same arguments, same errors): the alert checked or signed and
        its beacon (PROTOCOL.md section 6.4.2) queued to every device with a session, nothing else. Call
        :meth:`start_alert` right after; an I/O loop sends the beacons in between, so that they leave before
        anything is sealed for each device."""
        return self.live.announce_alert(source, now, **{**_ALERT_DEFAULTS, **options})

    def start_alert(self, bid: int, now: float) -> None:
        """The second half of :meth:`trigger_alert`: the reliable ``alert`` to every device, ``amp``, and the
        alert's stream with its ``join``s. KeyError unless ``bid`` was announced and not started."""
        self.live.start_alert(bid, now)

    def cancel_alert(self, bid: int, now: float, *, body: bytes | None = None, sig: bytes | None = None,
                     signing_key: Ed25519PrivateKey | None = None) -> None:
        """Cancel alert ``bid`` with a cancel signed by its authority (given, or signed with ``signing_key``):
        every device told of the alert gets ``alert_cancel``; its audio stops. KeyError if unknown or expired,
        AlertError if the cancel is refused."""
        self.live.cancel_alert(bid, now, body=body, sig=sig, signing_key=signing_key)

    def publish_content(self, path: str | os.PathLike[str], *, name: str | None = None) -> bytes:
        """Store an Ogg Opus programme (checked strictly) and return its cid. ContentError if refused."""
        if self.content is None:
            raise ContentError("this streamer has no content directory")
        return self.content.publish(path, name=name).cid

    def schedule_play(self, cid: bytes, zones: Sequence[str], at_ns: int, now: float, *, cls: int = 0,
                      lvl: int = 0, policy: str = "resume", name: str | None = None) -> int:
        """Play stored content ``cid`` at server time ``at_ns`` on every speaker of ``zones``; returns its bid.
        Members get ``prefetch`` now and ``play`` once they hold the content, or ``settings.play_lead_s`` before
        ``at_ns`` at the latest. ContentError for content not in the store."""
        return self.plays.schedule(cid, zones, at_ns, now, cls=cls, lvl=lvl, policy=policy, name=name)

    def prefetch_content(self, cid: bytes, zones: Sequence[str], now: float) -> int:
        """Offer stored content ``cid`` to every enrolled speaker of ``zones`` ahead of a :meth:`schedule_play`
        (``prefetch``; devices fetch it in the background). Returns how many were offered. ContentError for
        content not in the store, ZoneError for an unknown zone."""
        return self.plays.prefetch(cid, zones, now)

    def show_board(self, item: int, zones: Sequence[str], now: float, *, cls: int = 0, lvl: int = 0,
                   text: str | None = None, cid: bytes | None = None, until_ns: int | None = None) -> None:
        """Show a text and/or stored image on every enrolled e-board of ``zones`` (and later-joining ones) until
        server time ``until_ns`` (None: until :meth:`clear_board`); see :mod:`loa.streamer.boards`."""
        self.boards.show(item, zones, now, cls=cls, lvl=lvl, text=text, cid=cid, until_ns=until_ns)

    def clear_board(self, item: int, now: float) -> None:
        """Take a board item down everywhere. KeyError if unknown."""
        self.boards.clear(item, now)

    def publish_image(self, path: str | os.PathLike[str], *, name: str | None = None) -> bytes:
        """Store a PNG or JPEG image for e-boards and return its cid. ContentError if refused."""
        if self.content is None:
            raise ContentError("this streamer has no content directory")
        return self.content.publish_image(path, name=name).cid

    # -- observation -------------------------------------------------------------------------------------------

    def events(self) -> list[StreamerEvent]:
        """Drain the events since the last call (devices online/offline, reports, broadcasts ended...). At most
        the last 65536 are kept: drain them regularly (the I/O service does, after every datagram batch and
        timer)."""
        out = list(self._events)
        self._events.clear()
        return out

    def device_status(self, key: bytes) -> DeviceStatus:
        """A snapshot of one device (enrolled, or heard from). KeyError if the streamer knows nothing of it."""
        entry = self.registry.get(key)
        rt = self.sessions.get(key)
        if entry is None and rt is None:
            raise KeyError(key)
        return DeviceStatus.of(
            key, rt or DeviceRuntime(), zone=entry.zone if entry else None, name=entry.name if entry else "",
            kind=entry.kind if entry else None, enrolled=bool(entry and entry.enrolled),
            broadcasts=tuple(sorted(self.live.memberships(key) | self.plays.memberships(key))),
        )

    def devices(self) -> list[DeviceStatus]:
        keys = dict.fromkeys([e.public_key for e in self.registry] + self.sessions.known())
        return [self.device_status(key) for key in keys]

    def broadcast_status(self, bid: int) -> BroadcastStatus:
        """A snapshot of a running broadcast. KeyError if there is none."""
        if bid in self.plays:
            return self.plays.status(bid, self.sessions.is_online)
        return self.live.status(bid, self.sessions.is_online)

    def broadcasts(self) -> list[BroadcastStatus]:
        return [self.broadcast_status(bid) for bid in [*self.live.bids(), *self.plays.bids()]]

    def statistics(self) -> StreamerStatistics:
        drops: Counter[str] = Counter(self._drops)
        # the connection counts every datagram its endpoint drops (the endpoint's own counts are the same ones)
        # and the control messages it drops itself
        drops.update(self.sessions.conn.statistics().drops)
        reliable = self.sessions.conn.reliable_totals()
        return StreamerStatistics(
            self._in, self._bytes_in, self._sent, self._bytes_out, MappingProxyType(dict(drops)),
            self.sessions.online_count(), len(self.live.bids()) + len(self.plays.bids()),
            self.reports.retransmitted, self.reports.chunks, self.reports.time_resps,
            MappingProxyType(dict(self.sessions.messages)), self.sessions.sessions_started,
            reliable.sent, reliable.retransmitted, reliable.duplicates,
        )

    def close(self, now: float, reason: str = "server shutting down") -> None:
        """End every live broadcast (members get ``leave``; each frame clock sends its closing BYE at its next
        frame), then say ``bye`` to every device with a session. Flush :meth:`datagrams_to_send` afterwards."""
        self.live.close(now)
        for key in self.sessions.known():
            if self.sessions.is_online(key):
                self.sessions.try_send(key, Bye(reason=reason[:128]), now)
