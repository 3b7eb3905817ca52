"""The streamer inside `loa serve`: the control plane's zones, devices, schedule, alerts and live broadcasts
driving :class:`loa.streamer.StreamerService`, and what devices report written back to the database.

:class:`DataPlane` runs beside the HTTP API in one event loop:

* **Zones and devices** come from the database: loaded at start, then reconciled whenever the audit log says a
  zone, device or enrolment token changed (and every ``resync_s`` anyway). A device without a zone, or disabled,
  holds no session. A device presenting an enrolment token in its ``hello`` is enrolled through
  :func:`loa.control_plane.enrolment.redeem_token`, in the database first.
* **Alerts** (:class:`~loa.control_plane.alerts.AlertDispatcher`): the signed body and signature the control
  plane made are handed to the streamer, which checks them against the authority key (the control plane's own
  key is always one) and sends them; stored audio is decoded in the caller's worker thread first.
* **The schedule** (:class:`~loa.control_plane.scheduler.Broadcaster`): audio is published to the streamer's
  content store and played at the slot's server-time instant (devices prefetch it ahead); a board item (text,
  PNG or JPEG) is shown on the e-boards of the zones for its duration. A repeated slot key returns the broadcast
  already started for it.
* **Live broadcasts and relays**: an RTP/Opus input port or a stream URL to zones (:meth:`start_live`).
* **Reports**: devices online/offline, ``hello`` and telemetry go to the device's status; ``state`` reports to
  the as-played log; broadcasts ending to the broadcast log (:mod:`loa.control_plane.device_reports`). Written in
  batches from a queue; a report about a device the database does not know is dropped and counted.
* Every ``expire_s`` the alerts past their expiry are recorded expired.
* **IP multicast** (PROTOCOL.md section 5.7): ``DataPlaneSettings.groups`` gives zones a multicast group, a server
  setting like the UDP address (``loa serve --multicast CODE=ADDR:PORT``). A live stream or alert then leaves once
  per packet to the group of each member's nearest zone inside the target that has one, for the devices that said
  ``multicast`` in ``hello``; the others get it by unicast as before. A group belongs to a zone *code*: when that
  zone leaves the database a warning is logged and the group goes unused (nothing else changes); a zone created
  again with that code uses it again. Two zones may share a group, as in `loa streamer`: devices of both receive
  each other's streams on it and drop those they did not join (by SSRC), which costs bandwidth, not correctness.

Threads: the streamer is not thread-safe. The control plane calls the dispatcher and broadcaster from worker
threads; every such call runs on the event loop through :func:`anyio.from_thread.run_sync`. Database work
started from the loop goes to a worker thread, except enrolment by token, which is rare and bounded by the
streamer's provisional-session limits.

Failure semantics: what the streamer refuses raises out of the dispatcher/broadcaster call (the control plane
records the alert or slot as failed). A database error while writing reports is logged, and the batch is
retried one report at a time; a report that still fails is dropped and counted in :attr:`DataPlane.dropped`.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from loa.control_plane import alerts, asplayed, enrolment
from loa.control_plane.alerts import AlertAudio
from loa.control_plane.content import ContentStore as LibraryStore
from loa.control_plane.db import Database
from loa.control_plane.db.schema import broadcast_log
from loa.control_plane.db.schema import devices as devices_table
from loa.control_plane.db.schema import zones as zones_table
from loa.control_plane.device_reports import ReportWriter
from loa.control_plane.errors import ConflictError, InvalidError, NotFoundError
from loa.control_plane.events import Overflow
from loa.control_plane.settings import ControlPlane
from loa.protocol import Class, Level, Policy
from loa.protocol.session import device_id
from loa.streamer.content import ContentStore
from loa.streamer.core import StreamerCore, parse_group
from loa.streamer.discovery import Advertiser
from loa.streamer.keys import load_or_create_server_key
from loa.streamer.peers import PEERS_FILE
from loa.streamer.registry import DeviceEntry, Registry, RegistryError
from loa.streamer.service import (
    RECEIVE_BUFFER,
    StreamerService,
    epoch_for,
    open_udp_socket,
    receive_buffer_shortfall,
)
from loa.streamer.sources import Source, file_source
from loa.streamer.zones import Zone, ZoneTree

__all__ = ["DataPlane", "DataPlaneSettings", "LiveSource", "unknown_zones"]

log = logging.getLogger("loa.control_plane.dataplane")
SERVER_KEY_FILE = "server.key"
STREAMER_CONTENT = "streamer-content"
_SYNC_ACTIONS = ("zone.", "device.", "enrolment_token.")
_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BID_MARGIN = 1000  # broadcast ids a run may allocate without logging them (alerts, plays cut by a crash)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataPlaneSettings:
    """Where devices reach the server (``udp``), the zones' IP multicast groups (``groups``: zone code ->
    ``"ADDR:PORT"``, ``"[V6]:PORT"`` for IPv6; see the module docstring), and the background periods.

    ValueError, naming the zone, for a group that is not a multicast ``ADDR:PORT`` (:func:`parse_group`), or whose
    address family differs from ``udp``'s host (one socket sends everything, and an IPv4 socket cannot send to
    an IPv6 group or the reverse). Whether each zone exists is the database's to say (:func:`unknown_zones`)."""

    udp: tuple[str, int] = ("0.0.0.0", 4433)  # noqa: S104 (devices are on the LAN / WAN)
    zeroconf: bool = False
    name: str = "loa"
    groups: Mapping[str, str] = field(default_factory=dict)
    resync_s: float = 30.0
    expire_s: float = 5.0
    report_batch: int = 500
    receive_buffer: int = RECEIVE_BUFFER  # bytes asked for the device socket's receive buffer

    def __post_init__(self) -> None:
        ipv6_socket = ":" in self.udp[0]  # as open_udp_socket picks the family
        for code, group in self.groups.items():
            try:
                host, _ = parse_group(group)
            except ValueError as exc:
                raise ValueError(f"zone {code!r}: {exc}") from None
            if (":" in host) != ipv6_socket:
                raise ValueError(f"zone {code!r}: the {'IPv6' if ':' in host else 'IPv4'} group {group} cannot be "
                                 f"sent from the {'IPv6' if ipv6_socket else 'IPv4'} device address {self.udp[0]}")
        object.__setattr__(self, "groups", MappingProxyType(dict(self.groups)))


def unknown_zones(db: Database, codes: Iterable[str]) -> list[str]:
    """Those of ``codes`` that are not zones in the database, sorted (empty: all known); for checking
    ``DataPlaneSettings.groups`` before starting. Raises what the database raises (SQLAlchemyError)."""
    wanted = set(codes)
    if not wanted:
        return []
    with db.read() as conn:
        known = set(conn.execute(select(zones_table.c.code).where(zones_table.c.code.in_(wanted))).scalars())
    return sorted(wanted - known)


@dataclass(frozen=True, slots=True)
class LiveSource:
    """A live input: RTP/Opus arriving on UDP ``port`` (0: any free one), or a stream ``url`` relayed."""

    port: int | None = None
    url: str | None = None


def _ns(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


class _DatabaseRegistry(Registry):
    """The streamer's registry with enrolment tokens checked and redeemed in the database."""

    def __init__(self, zone_exists: Callable[[str], bool], db: Database) -> None:
        super().__init__(zone_exists)
        self._db = db
        self.enrolment_open = False

    def tokens_outstanding(self, now_ns: int) -> bool:
        return self.enrolment_open

    def redeem(self, token: str, key: bytes, now_ns: int, *, name: str = "", kind: str | None = None) -> DeviceEntry:
        if key in self:
            raise RegistryError(f"device {device_id(key)} is already registered")
        try:
            with self._db.write() as tx:
                record = enrolment.redeem_token(tx, enrolment.normalise_token(token), public_key=key,
                                                kind=kind or "speaker")
        except (InvalidError, ConflictError, NotFoundError) as exc:
            raise RegistryError(str(exc)) from None
        except SQLAlchemyError as exc:
            log.warning("enrolment by token failed: %s", type(exc).__name__)
            raise RegistryError("enrolment unavailable") from None
        if record.zone is None or not self._zone_exists(record.zone):
            raise RegistryError("the token's zone is unknown to the streamer")
        entry = DeviceEntry(key, record.zone, name=record.name, kind=record.kind)
        self.add(entry)
        return entry


@dataclass(frozen=True, slots=True)
class _Snapshot:
    zones: list[Zone]
    devices: list[DeviceEntry]
    enrolment_open: bool


class DataPlane:
    """The streamer of one `loa serve`, driven by its control plane (see the module docstring)."""

    def __init__(self, cp: ControlPlane, settings: DataPlaneSettings | None = None) -> None:
        self.cp = cp
        self.settings = settings or DataPlaneSettings()
        data_dir = cp.settings.data_dir
        private, public, self.key_created = load_or_create_server_key(data_dir / SERVER_KEY_FILE)
        self.public_key = public
        self.library = LibraryStore(data_dir / "content")
        self.zones = ZoneTree()
        self.registry = _DatabaseRegistry(self.zones.__contains__, cp.db)
        authority = cp.authority
        self._content = ContentStore(data_dir / STREAMER_CONTENT)
        self._peers_path = data_dir / PEERS_FILE  # where the devices' sessions were: restart notices (3.16)
        self._private = private
        self._authorities = {authority.kid: authority.private_key.public_key()}
        self.core: StreamerCore | None = None
        self.service: StreamerService | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stopped: anyio.Event | None = None
        self.reports = ReportWriter(cp.db, batch=self.settings.report_batch)
        self._sync_wanted: anyio.Event | None = None
        self._slots: dict[str, int] = {}
        self._groups: dict[str, str] = {}  # the groups the streamer was started with
        self._unused_groups: set[str] = set()  # zone codes of those whose zone is gone

    # -- running -----------------------------------------------------------------------------------------------

    def open_socket(self) -> socket.socket:
        """Bind the device port now (so that a busy port is one clear error before anything starts); set up to
        send to multicast groups when any is configured."""
        host, port = self.settings.udp
        sock = open_udp_socket(host, port, multicast=bool(self.settings.groups),
                               receive_buffer_size=self.settings.receive_buffer)
        shortfall = receive_buffer_shortfall(sock, self.settings.receive_buffer)
        if shortfall is not None:
            log.warning("%s", shortfall)
        return sock

    async def run(self, sock: socket.socket, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the site from the database, serve devices on ``sock`` and keep everything in step until
        cancelled or :meth:`stop`."""
        self._token = anyio.lowlevel.current_token()
        self._stopped = anyio.Event()
        self._sync_wanted = anyio.Event()
        snapshot = await anyio.to_thread.run_sync(self._snapshot)
        first_bid = await anyio.to_thread.run_sync(self._close_orphans)
        self._groups = self._starting_groups(snapshot)
        core = StreamerCore(static_private=self._private, zones=self.zones, registry=self.registry,
                            content=self._content, authorities=self._authorities, groups=self._groups,
                            first_bid=first_bid, epoch_ns=epoch_for(anyio.current_time()),
                            send_clock=anyio.current_time)
        self.core = core
        self._apply(snapshot)
        advertiser = None
        if self.settings.zeroconf:
            host = str(sock.getsockname()[0])
            advertiser = Advertiser(name=self.settings.name, host=host, port=int(sock.getsockname()[1]),
                                    public_key=core.public_key)
        self.service = StreamerService(core, sock, advertiser=advertiser, on_event=self.reports.accept,
                                       log=log.warning, peers_path=self._peers_path)
        self.cp.alert_dispatcher = self
        self.cp.live = self
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sync_loop)
                tg.start_soon(self._watch_changes)
                tg.start_soon(self.reports.run)
                tg.start_soon(self._expiry_loop)
                await self.service.serve(task_status=task_status)  # returns once stopped and said bye
                await self.reports.flush()
                tg.cancel_scope.cancel()
        finally:
            self.cp.alert_dispatcher = None
            self.cp.live = None
            self._stopped.set()

    async def wait_stopped(self) -> None:
        """Return once :meth:`run` has ended (devices were told ``bye``)."""
        if self._stopped is not None:
            await self._stopped.wait()

    def stop(self) -> None:
        """Say bye to every device and stop (from the event loop)."""
        if self.service is not None:
            self.service.stop()

    # -- zones and devices from the database ------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        with self.cp.db.read() as conn:
            zone_rows = conn.execute(select(zones_table.c.code, zones_table.c.name, zones_table.c.parent,
                                            zones_table.c.level)).all()
            device_rows = conn.execute(select(devices_table.c.public_key, devices_table.c.zone,
                                              devices_table.c.name, devices_table.c.kind,
                                              devices_table.c.disabled)).all()
            open_ = enrolment.enrolment_open(conn, self.cp.db.clock())
        zones = [Zone(r.code, r.name, r.parent, r.level) for r in zone_rows]
        entries = [DeviceEntry(bytes(r.public_key), r.zone, name=r.name, kind=r.kind, enrolled=not r.disabled)
                   for r in device_rows if r.zone is not None]
        return _Snapshot(zones, entries, open_)

    def _starting_groups(self, snapshot: _Snapshot) -> dict[str, str]:
        """The groups the streamer starts with. With any configured, the database's zones are taken first (the
        streamer checks that each group's zone exists); a group whose zone is not among them (deleted since
        ``loa serve`` checked) is left out of this run, with a warning."""
        if not self.settings.groups:
            return {}
        self._add_zones(snapshot.zones)
        groups: dict[str, str] = {}
        for code, group in self.settings.groups.items():
            if code in self.zones:
                groups[code] = group
            else:
                log.warning("zone %s is not in the database: its multicast group %s is not used", code, group)
        return groups

    def _add_zones(self, zones: list[Zone]) -> None:
        new = [z for z in zones if z.code not in self.zones]
        try:
            self.zones.add_all(new)
        except ValueError as exc:
            log.warning("zones not taken from the database: %s", exc)

    def _apply(self, snapshot: _Snapshot) -> None:
        """Make the streamer's zones and registry what the database says (on the event loop)."""
        core = self.core
        assert core is not None
        now = anyio.current_time()
        wanted = {z.code: z for z in snapshot.zones}
        self._add_zones(snapshot.zones)
        for code, zone in wanted.items():
            if code in self.zones and self.zones.get(code).parent != zone.parent:
                try:
                    core.move_zone(code, zone.parent, now)
                except ValueError as exc:
                    log.warning("zone %s not moved: %s", code, exc)
        entries = {e.public_key: e for e in snapshot.devices}
        for entry in list(self.registry):
            if entry.public_key not in entries:
                core.remove_device(entry.public_key, now)
        for key, entry in entries.items():
            current = self.registry.get(key)
            try:
                if current is None:
                    core.add_device(key, entry.zone, now, name=entry.name, kind=entry.kind, enrolled=entry.enrolled)
                elif (current.zone, current.name, current.kind, current.enrolled) != (
                        entry.zone, entry.name, entry.kind, entry.enrolled):
                    core.update_device(key, now, zone=entry.zone, name=entry.name, kind=entry.kind,
                                       enrolled=entry.enrolled)
            except ValueError as exc:
                log.warning("device %s not taken from the database: %s", device_id(key), exc)
        for code in sorted((z.code for z in self.zones if z.code not in wanted),
                           key=lambda c: -len(self.zones.path(c))):  # leaves first
            try:
                core.remove_zone(code)
            except ValueError as exc:
                log.warning("zone %s kept by the streamer: %s", code, exc)
        self._note_groups()
        self.registry.enrolment_open = snapshot.enrolment_open
        assert self.service is None or self.service.core is core
        if self.service is not None:
            self.service.changed()

    def _note_groups(self) -> None:
        """Log a group whose zone left the streamer (unused from now on) or came back (used again)."""
        for code, group in self._groups.items():
            if code not in self.zones and code not in self._unused_groups:
                self._unused_groups.add(code)
                log.warning("zone %s was removed from the database: its multicast group %s is unused", code, group)
            elif code in self.zones and code in self._unused_groups:
                self._unused_groups.discard(code)
                log.info("zone %s is in the database again: its multicast group %s is used again", code, group)

    @property
    def groups(self) -> dict[str, str]:
        """The multicast groups in use: zone code -> ``"ADDR:PORT"`` (those whose zone the streamer holds)."""
        return {code: group for code, group in self._groups.items() if code not in self._unused_groups}

    async def _sync_loop(self) -> None:
        assert self._sync_wanted is not None
        while True:
            with anyio.move_on_after(self.settings.resync_s):
                await self._sync_wanted.wait()
            self._sync_wanted = anyio.Event()
            try:
                snapshot = await anyio.to_thread.run_sync(self._snapshot)
            except SQLAlchemyError as exc:
                log.warning("cannot read zones and devices: %s", type(exc).__name__)
                continue
            self._apply(snapshot)

    async def _watch_changes(self) -> None:
        def wanted(event: Any) -> bool:
            return event.topic == "audit" and str(event.data.get("action", "")).startswith(_SYNC_ACTIONS)

        with self.cp.bus.subscribe(wanted) as subscription:
            while True:
                item = await subscription.next()
                if isinstance(item, Overflow) or item is not None:
                    assert self._sync_wanted is not None
                    self._sync_wanted.set()

    def resync(self) -> None:
        """Ask for a reconciliation with the database now (from any thread)."""
        self._call(lambda: self._sync_wanted.set() if self._sync_wanted is not None else None)

    # -- calls from worker threads -----------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._token is None or self.service is None:
            raise RuntimeError("the streamer is not running")
        return anyio.from_thread.run_sync(fn, token=self._token)

    def _now(self) -> float:
        return anyio.current_time()

    # AlertDispatcher

    def allocate_bid(self) -> int:
        return int(self._call(lambda: self._core().allocate_bid()))

    def trigger(self, body: bytes, sig: bytes, *, zones: Sequence[str], audio: AlertAudio, preroll_ms: int,
                text: str | None, status: str) -> int:
        if audio.live_port is not None:
            return int(anyio.from_thread.run(self._trigger_live, body, sig, audio.live_port, preroll_ms,
                                             token=self._token))
        source = self._stored_source(audio)

        def go() -> int:
            bid = self._core().trigger_alert(source, self._now(), body=body, sig=sig, preroll_ms=preroll_ms)
            self._changed()
            return bid

        return int(self._call(go))

    async def _trigger_live(self, body: bytes, sig: bytes, port: int, preroll_ms: int) -> int:
        service = self._service()
        source = await service.open_live_source(self.settings.udp[0], port)
        try:
            return service.trigger_alert(source, body=body, sig=sig, preroll_ms=preroll_ms)
        except BaseException:
            source.close()
            raise

    def _stored_source(self, audio: AlertAudio) -> Source:
        if audio.content_id is None:
            return _Silence()
        path = self.library.path(audio.content_id, "audio/ogg")
        return file_source(path, target_lufs=None)  # the library normalised it already

    def cancel(self, bid: int, body: bytes, sig: bytes) -> None:
        def go() -> None:
            self._core().cancel_alert(bid, self._now(), body=body, sig=sig)
            self._changed()

        self._call(go)

    # Broadcaster (the scheduler)

    def prefetch(self, content_path: Path, zones: Sequence[str], at: datetime) -> None:
        if content_path.suffix != ".opus":
            return  # board images are sent with the item; texts need nothing ahead

        def go() -> None:
            cid = self._core().publish_content(content_path)
            self._core().prefetch_content(cid, zones, self._now())
            self._changed()

        self._call(go)

    def play(self, content_path: Path, zones: Sequence[str], at: datetime, cls: Class, lvl: Level,  # noqa: PLR0917
             policy: Policy, *, key: str, duration: timedelta) -> int:
        suffix = content_path.suffix
        text = content_path.read_text(encoding="utf-8") if suffix == ".txt" else None

        def go() -> int:
            if key in self._slots:
                return self._slots[key]
            core, now = self._core(), self._now()
            if suffix == ".opus":
                cid = core.publish_content(content_path)
                bid = core.schedule_play(cid, zones, _ns(at), now, cls=int(cls), lvl=int(lvl), policy=str(policy))
            else:
                bid = core.allocate_bid()
                image = core.publish_image(content_path) if suffix in {".png", ".jpg"} else None
                core.show_board(bid, zones, now, cls=int(cls), lvl=int(lvl), text=text, cid=image,
                                until_ns=_ns(at + duration))
            self._slots[key] = bid
            self._changed()
            return bid

        bid = int(self._call(go))
        self._log_start(bid, "scheduled", zones, at, int(cls), int(lvl), content_path.stem, content_path.name)
        return bid

    # Live broadcasts and relays

    def start_live(self, source: LiveSource, zones: Sequence[str], *, cls: int, lvl: int, policy: str,
                   title: str) -> tuple[int, tuple[str, int] | None]:
        """Start a live broadcast (RTP input port) or relay (stream URL); returns its bid and, for an RTP
        input, the address it listens on. Raises what the streamer refuses (ValueError, OSError)."""
        async def go() -> tuple[int, tuple[str, int] | None]:
            service = self._service()
            if source.url is not None:
                from loa.streamer.relay import RelaySource

                relay: Source = RelaySource(source.url)
                address = None
            else:
                live = await service.open_live_source(self.settings.udp[0], source.port or 0)
                relay, address = live, live.address
            try:
                bid = service.start_broadcast(relay, zones, cls=cls, lvl=lvl, policy=policy, name=title)
            except BaseException:
                relay.close()
                raise
            return bid, address

        if self._token is None:
            raise RuntimeError("the streamer is not running")
        bid, address = anyio.from_thread.run(go, token=self._token)
        kind = "relay" if source.url is not None else "live"
        self._log_start(bid, kind, zones, datetime.now(UTC), cls, lvl, title, None)
        return bid, address

    def stop_broadcast(self, bid: int) -> None:
        """End a running broadcast now. KeyError if the streamer is not running it."""
        def go() -> None:
            self._core().stop_broadcast(bid, self._now())
            self._changed()

        self._call(go)

    def running(self) -> set[int]:
        """The bids the streamer is running now."""
        return set(self._call(lambda: {b.bid for b in self._core().broadcasts()}))

    def _log_start(self, bid: int, kind: str, zones: Sequence[str], at: datetime, cls: int, lvl: int,  # noqa: PLR0917
                   title: str, content: str | None) -> None:
        digest = content.split(".")[0] if content and len(content.split(".")[0]) == 64 else None
        try:
            with self.cp.db.write() as tx:
                asplayed.broadcast_started(tx, asplayed.BroadcastStart(
                    bid=bid, kind=kind, zones=tuple(zones), at=at, title=title, cls=cls, lvl=lvl,
                    content_id=digest))
        except SQLAlchemyError as exc:
            log.warning("broadcast %s not logged: %s", bid, type(exc).__name__)

    def _core(self) -> StreamerCore:
        if self.core is None:
            raise RuntimeError("the streamer is not running")
        return self.core

    def _service(self) -> StreamerService:
        if self.service is None:
            raise RuntimeError("the streamer is not running")
        return self.service

    def _changed(self) -> None:
        if self.service is not None:
            self.service.changed()

    # -- what devices report -----------------------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Device reports stored so far (:class:`~loa.control_plane.device_reports.ReportWriter`)."""
        return self.reports.written

    @property
    def dropped(self) -> Counter[str]:
        """Device reports given up, by reason (:class:`~loa.control_plane.device_reports.ReportWriter`)."""
        return self.reports.dropped

    # -- housekeeping ------------------------------------------------------------------------------------------

    async def _expiry_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.expire_s)
            try:
                await anyio.to_thread.run_sync(alerts.expire_due, self.cp.db)
            except SQLAlchemyError as exc:
                log.warning("alert expiry not recorded: %s", type(exc).__name__)

    def _close_orphans(self) -> int:
        """Broadcasts a previous run left open ended with it. Returns the first broadcast id of this run: past
        every logged one by ``BID_MARGIN`` (ids a killed run allocated but never logged), so that a restarted
        server does not reuse ids its devices may still hold (they ignore a reused one)."""
        with self.cp.db.write() as tx:
            tx.conn.execute(update(broadcast_log).where(broadcast_log.c.ended_at.is_(None))
                            .values(ended_at=tx.now, end_reason="server stopped"))
            last = tx.conn.execute(select(func.max(broadcast_log.c.bid))).scalar_one()
        return (int(last or 0) + BID_MARGIN) & 0xFFFFFFFF or 1


class _Silence:
    """An alert without audio: silence until the alert ends (its signed text still reaches the boards)."""

    finished = False

    def pull(self) -> Any:
        import numpy as np

        return np.zeros(960, dtype=np.int16)

    def close(self) -> None:
        self.finished = True
