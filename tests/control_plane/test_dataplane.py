"""The streamer inside the control plane, on real loopback sockets with reference devices: zones and devices come
from the database (and follow its changes), enrolment by token, status and as-played reports go back, signed
alerts and cancels, scheduled programmes and board items, live and relayed broadcasts (on SQLite and PostgreSQL).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from _dataplane_lab import run_lab, serve_directory, wait_for
from prometheus_client import generate_latest
from sqlalchemy import select

from loa.codecs import encode_file_to_ogg_opus, tone
from loa.control_plane import alerts, devices, enrolment, library, zones
from loa.control_plane.alerts import AlertAudio, AlertDraft
from loa.control_plane.api.metrics import Metrics
from loa.control_plane.auth import Actor, Principal
from loa.control_plane.dataplane import DataPlane, DataPlaneSettings, LiveSource
from loa.control_plane.db.schema import as_played, broadcast_log
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, fast_settings, library_item
from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.runner import DeviceRunner
from loa.protocol import Class, Level, Policy
from loa.protocol.noise import x25519_public
from loa.protocol.session import device_id

pytestmark = pytest.mark.e2e

NOC = Principal(user_id=1, username="noc1", role="noc", scope=None, token_id=1, token_kind="api")
NOC2 = Principal(user_id=2, username="noc2", role="noc", scope=None, token_id=2, token_kind="api")


class Lab:
    """A control plane with its data plane on 127.0.0.1, and reference devices."""

    def __init__(self, cp: ControlPlane, tg: anyio.abc.TaskGroup) -> None:
        self.cp = cp
        self.tg = tg
        self.dp = DataPlane(cp, DataPlaneSettings(udp=("127.0.0.1", 0), resync_s=2.0, expire_s=0.5))
        self.rng = random.Random(7)
        self.devices: list[SpeakerCore] = []

    async def start(self) -> None:
        self.sock = self.dp.open_socket()
        await self.tg.start(self.dp.run, self.sock)

    def device(self, private: bytes | None = None, *, token: str | None = None, kind: str = "speaker") -> SpeakerCore:
        private = private or self.rng.randbytes(32)
        address = self.sock.getsockname()[:2]
        core = SpeakerCore(static_private=private, server_public=self.dp.public_key,
                           authority_keys=[self.cp.authority.public_key], server_address=address,
                           store=MemoryStore(8 * 1024 * 1024), rng=random.Random(self.rng.random()), token=token,
                           kind=kind)
        runner = DeviceRunner(core, address, bind_host="127.0.0.1")
        self.tg.start_soon(runner.run)
        self.devices.append(core)
        return core

    def enrol(self, zone: str, private: bytes, name: str = "") -> str:
        with self.cp.db.write() as tx:
            return devices.enrol(tx, Actor("test"), public_key=x25519_public(private), kind="speaker", zone=zone,
                                 name=name).id

    async def online_device(self, zone: str, name: str = "") -> tuple[str, SpeakerCore]:
        """A new device enrolled in ``zone``, once the streamer knows it and the database says it is online."""
        key = self.rng.randbytes(32)
        ident = self.enrol(zone, key, name)
        await wait_for(lambda: self.streamer_knows(key), 10, "the streamer to learn the new device")
        device = self.device(key)
        await wait_for(lambda: self.online(ident), 15, "the device online in the database")
        return ident, device

    def online(self, ident: str) -> bool:
        with self.cp.db.read() as conn:
            return devices.get(conn, ident).online

    def streamer_knows(self, private: bytes) -> bool:
        return self.dp.registry.get(x25519_public(private)) is not None

    def played(self, ident: str) -> list[Any]:
        with self.cp.db.read() as conn:
            return list(conn.execute(select(as_played).where(as_played.c.device_id == ident)
                                     .order_by(as_played.c.id)).all())


@pytest.fixture
def cp(db_url: str, tmp_path: Path) -> Any:
    control = ControlPlane(fast_settings(tmp_path / "data", db_url, alerts_two_person=True))
    Seed(control).province()
    yield control
    control.close()


def run(test: Callable[[Lab], Any], cp: ControlPlane) -> None:
    run_lab(lambda tg: Lab(cp, tg), test)


def test_devices_follow_the_database_and_report_back(cp: ControlPlane) -> None:
    async def body(lab: Lab) -> None:
        ident, device = await lab.online_device("20194-01", "cụm loa 1")
        assert device.settings.zones == ("48", "490", "20194", "20194-01")
        await wait_for(lambda: lab.dp.written > 0 and bool(_status(cp, ident).get("fw")), 10, "hello in status")
        # Moving it in the database moves it in the streamer: a new zone path reaches the device.
        with cp.db.write() as tx:
            devices.assign(tx, Actor("test"), ident, "20227-01")
        await wait_for(lambda: device.settings.zones == ("48", "491", "20227", "20227-01"), 10, "the new zone path")
        # A new zone appears in the streamer; disabling the device ends its session.
        with cp.db.write() as tx:
            zones.create(tx, Actor("test"), code="20227-02", name="Tổ dân phố 2", parent="20227", level="hamlet")
        await wait_for(lambda: "20227-02" in lab.dp.zones, 10, "the new zone")
        with cp.db.write() as tx:
            devices.set_disabled(tx, Actor("test"), ident, True)
        await wait_for(lambda: not lab.online(ident), 15, "the disabled device offline")

    run(body, cp)


def test_metrics_count_what_the_streamer_received(cp: ControlPlane) -> None:
    """/metrics tells an operator what reaches the streamer: datagrams, completed handshakes, control messages by
    type, drops by reason; and how the device reports going to the database keep up."""
    def scrape() -> str:
        return generate_latest(Metrics(cp).registry).decode()

    async def body(lab: Lab) -> None:
        await lab.online_device("20194-01")
        text = scrape()
        assert _metric(text, "loa_streamer_sessions_started") == 1
        hellos = _metric(text, 'loa_streamer_messages_received{type="Hello"}')
        assert hellos is not None
        assert hellos >= 1
        control_sent = _metric(text, "loa_streamer_control_sent")  # config, join... to the device
        assert control_sent is not None
        assert control_sent >= 1
        assert _metric(text, "loa_streamer_control_retransmitted") is not None
        assert _metric(text, "loa_streamer_control_duplicates") is not None
        written = _metric(text, "loa_device_reports_written")  # its online status, in the database already
        assert written is not None
        assert written >= 1
        assert _metric(text, "loa_device_reports_queued") is not None
        received = _metric(text, "loa_streamer_datagrams_received")
        assert received is not None
        assert received >= 2  # the handshake and hello at least
        address = lab.sock.getsockname()[:2]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"\x09junk", address)  # no loa datagram: the kernel's filter drops it, and counts it
            stranger.sendto(b"\x04\x01\x00\x00" + bytes(28), address)  # a transport message of no session
            await wait_for(lambda: (_metric(scrape(), "loa_streamer_kernel_drops") or 0) >= 1, 10,
                           "the junk datagram counted by the kernel")
            await wait_for(lambda: _dropped(scrape()) >= 1, 10, "the forged transport message counted as dropped")

    run(body, cp)


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def _dropped(text: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("loa_streamer_drops{"))


def _status(cp: ControlPlane, ident: str) -> dict[str, Any]:
    with cp.db.read() as conn:
        return dict(devices.get(conn, ident).status or {})


def test_enrolment_by_token_goes_through_the_database(cp: ControlPlane) -> None:
    async def body(lab: Lab) -> None:
        with cp.db.write() as tx:
            token = enrolment.create_token(tx, Actor("test"), zone="20195", ttl=timedelta(minutes=5))[0]
            enrolment.create_token(tx, Actor("test"), zone="20195", ttl=timedelta(minutes=5))  # keeps it open
        await wait_for(lambda: lab.dp.registry.enrolment_open, 10, "enrolment open in the streamer")
        device = lab.device(token=token)
        await wait_for(lambda: device.settings.zones == ("48", "490", "20195"), 15, "the token's zone")
        wrong = lab.device(token="AAAA-BBBB-CCCC-DDDD")
        assert lab.dp.core is not None
        await wait_for(lambda: lab.dp.core.statistics().drops.get("enrolment_refused", 0) > 0, 15, "a refusal")
        with cp.db.read() as conn:
            found = devices.get(conn, device_id(device.public_key))
        assert found.zone == "20195"
        await wait_for(lambda: lab.online(found.id), 10, "the enrolled device online in the database")
        assert wrong.settings.zones == ()
        assert lab.dp.registry.get(wrong.public_key) is None

    run(body, cp)


def test_an_alert_is_signed_dispatched_held_and_cancelled(cp: ControlPlane, tmp_path: Path) -> None:
    async def body(lab: Lab) -> None:
        inside, outside = lab.rng.randbytes(32), lab.rng.randbytes(32)
        ids = lab.enrol("20194-01", inside), lab.enrol("20227", outside)
        await wait_for(lambda: lab.streamer_knows(inside) and lab.streamer_knows(outside), 10, "devices known")
        a, b = lab.device(inside), lab.device(outside)
        await wait_for(lambda: all(map(lab.online, ids)), 15, "devices online")

        item = library_item(cp, zone=None, kind="audio", cls=2, lvl=0, duration_s=5.0)
        with cp.db.read() as conn:
            content = library.get(conn, item).content
        assert content is not None

        def compose_and_trigger() -> int:
            audio = AlertAudio(content_id=content.sha256, library_item=item)
            with cp.db.write() as tx:
                record = alerts.create(tx, NOC, None, AlertDraft(zones=("20194",), status="actual", audio=audio,
                                                                 text="Bão số 5: sơ tán ngay"))
            alerts.trigger(cp.db, NOC, None, record.id, two_person=True, authority=cp.authority,
                           dispatcher=cp.alert_dispatcher)
            done = alerts.confirm(cp.db, NOC2, None, record.id, authority=cp.authority,
                                  dispatcher=cp.alert_dispatcher)
            assert done.state == "active", done
            return record.id

        alert_id = await anyio.to_thread.run_sync(compose_and_trigger)
        bid = _bid(cp, alert_id)
        await wait_for(lambda: a.alerts.for_bid(bid) is not None, 10, "the alert held by the device in the commune")
        assert b.alerts.for_bid(bid) is None
        await wait_for(lambda: any(r.kind == "alert" for r in lab.played(ids[0])), 10, "as-played alert row")
        await anyio.to_thread.run_sync(lambda: alerts.cancel(cp.db, NOC, None, alert_id, authority=cp.authority,
                                                             dispatcher=cp.alert_dispatcher))
        await wait_for(lambda: a.alerts.for_bid(bid) is None, 10, "the alert cancelled on the device")

    run(body, cp)


def _bid(cp: ControlPlane, alert_id: int) -> int:
    with cp.db.read() as conn:
        bid = alerts.get(conn, alert_id).bid
    assert bid is not None
    return bid


def test_scheduled_audio_and_board_items_and_a_repeated_slot_key(cp: ControlPlane, tmp_path: Path) -> None:
    programme = tmp_path / "tin.opus"
    encode_file_to_ogg_opus(tone(1.0, 660.0), programme, bitrate=32_000)
    text = tmp_path / ("a" * 64 + ".txt")
    text.write_text("Họp tổ dân phố lúc 19 giờ", encoding="utf-8")

    async def body(lab: Lab) -> None:
        speaker, board = lab.rng.randbytes(32), lab.rng.randbytes(32)
        ident = lab.enrol("20194-01", speaker)
        with cp.db.write() as tx:
            devices.enrol(tx, Actor("test"), public_key=x25519_public(board), kind="board", zone="20194-02")
        await wait_for(lambda: lab.streamer_knows(speaker) and lab.streamer_knows(board), 10, "devices known")
        s = lab.device(speaker)
        bd = lab.device(board, kind="board")
        await wait_for(lambda: lab.online(ident), 15, "speaker online")
        at = datetime.now(UTC) + timedelta(seconds=2)

        def schedule() -> tuple[int, int, int]:
            first = lab.dp.play(programme, ["20194"], at, Class(1), Level(1), Policy("resume"), key="e1@slot",
                                duration=timedelta(seconds=1))
            again = lab.dp.play(programme, ["20194"], at, Class(1), Level(1), Policy("resume"), key="e1@slot",
                                duration=timedelta(seconds=1))
            item = lab.dp.play(text, ["20194"], at, Class(0), Level(1), Policy("resume"), key="e2@slot",
                               duration=timedelta(minutes=5))
            return first, again, item

        first, again, item = await anyio.to_thread.run_sync(schedule)
        assert first == again
        await wait_for(lambda: any(r.bid == first for r in lab.played(ident)), 15, "the programme played")
        await wait_for(lambda: item in bd.settings.boards, 10, "the board item on the board")
        assert bd.settings.boards[item].text == "Họp tổ dân phố lúc 19 giờ"
        assert s.settings.boards == {}
        with cp.db.read() as conn:
            kinds = {r.bid: r.kind for r in conn.execute(select(broadcast_log)).all()}
        assert kinds[first] == "scheduled"

    run(body, cp)


def test_a_relayed_stream_reaches_the_zone_and_stops(cp: ControlPlane, tmp_path: Path) -> None:
    encode_file_to_ogg_opus(tone(30.0, 440.0), tmp_path / "radio.opus", bitrate=32_000)

    async def body(lab: Lab) -> None:
        ident, _ = await lab.online_device("20227-01")
        bid, address = await anyio.to_thread.run_sync(lambda: lab.dp.start_live(
            LiveSource(url=url), ["20227"], cls=1, lvl=1, policy="resume", title="Đài tỉnh"))
        assert address is None
        await wait_for(lambda: any(r.bid == bid and r.ended_at is None for r in lab.played(ident)), 15,
                       "the relay playing on the device")
        await anyio.to_thread.run_sync(lab.dp.stop_broadcast, bid)
        assert lab.dp.core is not None
        await wait_for(lambda: bid not in {b.bid for b in lab.dp.core.broadcasts()}, 10, "the relay stopped")
        with pytest.raises(KeyError):
            await anyio.to_thread.run_sync(lab.dp.stop_broadcast, bid)

    with serve_directory(tmp_path) as base:
        url = f"{base}/radio.opus"
        run(body, cp)
