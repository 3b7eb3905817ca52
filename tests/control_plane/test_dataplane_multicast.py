"""IP multicast groups per zone in the control plane's streamer (PROTOCOL.md section 5.7): the settings and the
``--multicast`` option refuse what cannot work with one clear error; a live broadcast on real loopback sockets
goes once to the group for the reference devices that can join it and by unicast to the others; a zone with a
group that leaves the database (or was never there) costs a warning, not the server."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import click
import pytest
from _dataplane_lab import run_lab, serve_directory, wait_for
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.bench.alert import free_group
from loa.codecs import encode_file_to_ogg_opus, tone
from loa.control_plane import devices, zones
from loa.control_plane.auth import Actor
from loa.control_plane.commands import _groups, serve
from loa.control_plane.dataplane import DataPlane, DataPlaneSettings, LiveSource, unknown_zones
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, fast_settings
from loa.devices.content import MemoryStore
from loa.devices.core import DEFAULT_CAPS, SpeakerCore
from loa.devices.runner import DeviceRunner
from loa.protocol.noise import x25519_public
from loa.streamer.core import parse_group
from loa.streamer.service import MULTICAST_TTL

LOGGER = "loa.control_plane.dataplane"
UNICAST_CAPS = tuple(c for c in DEFAULT_CAPS if c != "multicast")


# -- settings and the option ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("udp", "group", "says"), [
    ("127.0.0.1", "10.0.0.1:5004", "with a multicast address, not '10.0.0.1:5004'"),
    ("127.0.0.1", "239.255.1.1", "with a multicast address, not '239.255.1.1'"),
    ("127.0.0.1", "239.255.1.1:0", "with a multicast address, not '239.255.1.1:0'"),
    ("127.0.0.1", "239.255.1.1:65536", "with a multicast address"),
    ("127.0.0.1", "[ff3e::1]:5004", "the IPv6 group [ff3e::1]:5004 cannot be sent from the IPv4 device address"),
    ("::1", "239.255.1.1:5004", "the IPv4 group 239.255.1.1:5004 cannot be sent from the IPv6 device address ::1"),
])
def test_settings_refuse_a_group_that_cannot_work(udp: str, group: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"^zone '48': ") as raised:
        DataPlaneSettings(udp=(udp, 4433), groups={"48": group})
    assert says in str(raised.value)


def test_settings_keep_a_read_only_copy_and_accept_a_shared_group() -> None:
    given_groups = {"48": "239.255.48.1:5004", "49": "239.255.48.1:5004"}  # one group for two zones: accepted
    chosen = DataPlaneSettings(udp=("127.0.0.1", 4433), groups=given_groups)
    given_groups["50"] = "239.255.50.1:5004"
    assert dict(chosen.groups) == {"48": "239.255.48.1:5004", "49": "239.255.48.1:5004"}
    with pytest.raises(TypeError):
        chosen.groups["51"] = "239.255.51.1:5004"  # type: ignore[index]
    assert dict(DataPlaneSettings(udp=("::", 4433), groups={"48": "[ff3e::48]:5004"}).groups) == {
        "48": "[ff3e::48]:5004"}
    assert DataPlaneSettings().groups == {}


@pytest.mark.parametrize(("values", "says"), [
    (("48:239.255.48.1:5004",), "expected CODE=ADDR:PORT (e.g. 48=239.255.48.1:5004), got '48:239.255.48.1:5004'"),
    (("=239.255.48.1:5004",), "expected CODE=ADDR:PORT (e.g. 48=239.255.48.1:5004), got '=239.255.48.1:5004'"),
    (("48=10.1.2.3:5004",), ("zone '48': a multicast group is ADDR:PORT with a multicast address, not "
                            "'10.1.2.3:5004'")),
    (("48=239.255.48.1:5004", "48=239.255.48.2:5004"),
     "zone '48' is given twice (239.255.48.1:5004 and 239.255.48.2:5004)"),
])
def test_the_option_parser_names_what_is_wrong(values: tuple[str, ...], says: str) -> None:
    with pytest.raises(click.ClickException) as raised:
        _groups(values)
    assert raised.value.message == f"--multicast: {says}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40) | st.builds("{}={}:{}".format, st.text(max_size=6), st.ip_addresses(),
                                                  st.integers(-1, 70_000)), max_size=4))
def test_any_option_text_is_parsed_or_refused_in_one_line(values: list[str]) -> None:
    message = None
    try:
        groups = _groups(tuple(values))
    except click.ClickException as exc:
        message = exc.message
    if message is not None:
        assert message.startswith("--multicast: ")
        assert "\n" not in message  # what the user typed is quoted with repr()
        return
    assert len(groups) == len(values)
    for code, group in groups.items():
        assert code
        assert parse_group(group)[1] > 0


def _seeded(tmp_path: Path) -> None:
    cp = ControlPlane(fast_settings(tmp_path))
    try:
        Seed(cp).province()
    finally:
        cp.close()


@pytest.mark.parametrize(("args", "says"), [
    (["--multicast", "48"], "Error: --multicast: expected CODE=ADDR:PORT (e.g. 48=239.255.48.1:5004), got '48'"),
    (["--multicast", "48=192.168.1.1:5004"], ("Error: --multicast: zone '48': a multicast group is ADDR:PORT with a "
                                             "multicast address, not '192.168.1.1:5004'")),
    (["--multicast", "48=239.255.48.1:5004", "--multicast", "48=239.255.48.2:5004"],
     "Error: --multicast: zone '48' is given twice (239.255.48.1:5004 and 239.255.48.2:5004)"),
    (["--multicast", "48=[ff3e::48]:5004"],
     ("Error: --multicast: zone '48': the IPv6 group [ff3e::48]:5004 cannot be sent from the IPv4 device address "
     "127.0.0.1")),
    (["--multicast", "48=239.255.48.1:5004", "--multicast", "99=239.255.99.1:5004", "--multicast",
      "98=239.255.98.1:5004"],
     "Error: --multicast: the database has no zone '98' or '99' (create zones with loa admin zones import first)"),
    (["--multicast", "99=239.255.99.1:5004"],
     "Error: --multicast: the database has no zone '99' (create zones with loa admin zones import first)"),
])
def test_serve_refuses_bad_groups_in_one_line_and_starts_nothing(tmp_path: Path, args: list[str],
                                                                  says: str) -> None:
    data = tmp_path / "data"
    _seeded(data)
    before = sorted(p.name for p in data.iterdir())
    result = CliRunner().invoke(serve, ["--data-dir", str(data), "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0",
                                        *args])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [says]
    assert result.exception is not None
    assert isinstance(result.exception, SystemExit)
    assert "password" not in result.output  # the first administrator was not created: nothing started
    assert sorted(p.name for p in data.iterdir()) == before  # no server key, no upload folders made


def test_unknown_zones_asks_the_database(db_url: str, tmp_path: Path) -> None:
    cp = ControlPlane(fast_settings(tmp_path / "data", db_url))
    try:
        assert unknown_zones(cp.db, ["48"]) == ["48"]
        Seed(cp).province()
        assert unknown_zones(cp.db, ["48", "20194-01", "99", "0", "99"]) == ["0", "99"]
        assert unknown_zones(cp.db, {"48": "239.255.7.7:5004"}) == []
        assert unknown_zones(cp.db, []) == []
    finally:
        cp.close()


def test_the_device_socket_is_set_up_for_groups_only_when_there_are_some(tmp_path: Path) -> None:
    cp = ControlPlane(fast_settings(tmp_path / "data"))
    try:
        with_groups = DataPlane(cp, DataPlaneSettings(udp=("127.0.0.1", 0), groups={"48": "239.255.48.1:5004"}))
        without = DataPlane(cp, DataPlaneSettings(udp=("127.0.0.1", 0)))
        with with_groups.open_socket() as sock, without.open_socket() as plain:
            assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == MULTICAST_TTL
            assert socket.inet_ntoa(sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)) == "127.0.0.1"
            assert plain.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1  # the kernel's default
            assert socket.inet_ntoa(plain.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)) == "0.0.0.0"
    finally:
        cp.close()


# -- live broadcasts on loopback -----------------------------------------------------------------------------------


class Lab:
    """A control plane with its data plane on 127.0.0.1 (with ``groups``), and reference devices."""

    def __init__(self, cp: ControlPlane, tg: anyio.abc.TaskGroup, groups: dict[str, str]) -> None:
        self.cp = cp
        self.tg = tg
        self.dp = DataPlane(cp, DataPlaneSettings(udp=("127.0.0.1", 0), groups=groups, resync_s=2.0, expire_s=0.5))
        self.rng = random.Random(48)
        self.runners: dict[str, DeviceRunner] = {}
        self.keys: dict[str, bytes] = {}

    async def start(self) -> None:
        self.sock = self.dp.open_socket()
        await self.tg.start(self.dp.run, self.sock)

    async def device(self, zone: str, name: str, *, caps: tuple[str, ...] = DEFAULT_CAPS) -> SpeakerCore:
        """A device enrolled in ``zone`` in the database, running on loopback once the streamer knows it."""
        private = self.rng.randbytes(32)
        with self.cp.db.write() as tx:
            devices.enrol(tx, Actor("test"), public_key=x25519_public(private), kind="speaker", zone=zone, name=name)
        await wait_for(lambda: self.dp.registry.get(x25519_public(private)) is not None, 10, f"{name} known")
        address = self.sock.getsockname()[:2]
        core = SpeakerCore(static_private=private, server_public=self.dp.public_key,
                           authority_keys=[self.cp.authority.public_key], server_address=address,
                           store=MemoryStore(1 << 20), rng=random.Random(self.rng.random()), caps=caps)
        runner = DeviceRunner(core, address, bind_host="127.0.0.1")
        self.tg.start_soon(runner.run)
        self.runners[name] = runner
        self.keys[name] = core.public_key
        return core


@pytest.fixture
def cp(tmp_path: Path) -> Any:
    control = ControlPlane(fast_settings(tmp_path / "data"))
    Seed(control).province()
    yield control
    control.close()


def run(body: Callable[[Lab], Awaitable[None]], cp: ControlPlane, groups: dict[str, str]) -> None:
    run_lab(lambda tg: Lab(cp, tg, groups), body)


@pytest.fixture
def radio(tmp_path: Path) -> Any:
    """A 30-second Ogg Opus tone served over HTTP on loopback: the URL a relay plays."""
    encode_file_to_ogg_opus(tone(30.0, 440.0), tmp_path / "radio.opus", bitrate=32_000)
    with serve_directory(tmp_path) as base:
        yield f"{base}/radio.opus"


@pytest.mark.e2e
def test_a_live_broadcast_goes_once_to_the_zone_group_and_by_unicast_to_the_rest(
        cp: ControlPlane, radio: str, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(f"{radio}")
    group, spare = free_group(rng), free_group(rng)
    frames = 50  # 1 s of programme played from the group

    async def body(lab: Lab) -> None:
        assert lab.dp.groups == {"20194": group, "20195": spare}
        near = await lab.device("20194-01", "near")
        far = await lab.device("20194-02", "far")
        plain = await lab.device("20194-01", "plain", caps=UNICAST_CAPS)  # never said it can join groups
        other = await lab.device("20227-01", "other")  # in a zone with no group on its path
        everyone = [near, far, plain, other]
        await wait_for(lambda: all(d.statistics().clock_ready for d in everyone), 15, "every device in sync")
        bid, address = await anyio.to_thread.run_sync(lambda: lab.dp.start_live(
            LiveSource(url=radio), ["48"], cls=1, lvl=1, policy="resume", title="Đài tỉnh"))
        assert address is None
        members = (near, far)
        await wait_for(lambda: all(len(d.log.for_bid(bid)) >= frames for d in everyone), 20,
                       f"{frames} frames on every device")
        assert lab.dp.core is not None
        destinations = dict(lab.dp.core.destinations(bid))
        assert destinations == {
            ("group", group): parse_group(group),
            lab.keys["plain"]: lab.runners["plain"].local_address,
            lab.keys["other"]: lab.runners["other"].local_address,
        }
        assert [d.groups() for d in members] == [{group}, {group}]
        assert [lab.runners[n].groups() for n in ("near", "far")] == [{group}, {group}]
        assert plain.groups() == other.groups() == set()
        for name in ("near", "far"):
            stats = lab.runners[name].stats
            assert stats.group_errors == 0
            assert stats.group_received >= frames, (name, stats)
        assert lab.runners["plain"].stats.group_received == lab.runners["other"].stats.group_received == 0

        # The zone of the spare group leaves the database while the broadcast covers it: a warning, nothing more.
        with caplog.at_level(logging.INFO, logger=LOGGER):
            with cp.db.write() as tx:
                zones.delete(tx, Actor("test"), "20195")
            await wait_for(lambda: "20195" not in lab.dp.zones, 10, "the zone gone from the streamer")
            assert lab.dp.groups == {"20194": group}
            played = len(near.log.for_bid(bid))
            await wait_for(lambda: len(near.log.for_bid(bid)) >= played + frames, 10, "the stream going on")
            with cp.db.write() as tx:
                zones.create(tx, Actor("test"), code="20195", name="Phường Hòa Hiệp Nam", parent="490",
                             level="commune")
            await wait_for(lambda: "20195" in lab.dp.zones, 10, "the zone back in the streamer")
        assert lab.dp.groups == {"20194": group, "20195": spare}
        said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert f"zone 20195 was removed from the database: its multicast group {spare} is unused" in said
        assert f"zone 20195 is in the database again: its multicast group {spare} is used again" in said
        await anyio.to_thread.run_sync(lab.dp.stop_broadcast, bid)
        await wait_for(lambda: not any(r.groups() for r in lab.runners.values()), 10, "every device to leave")

    run(body, cp, {"20194": group, "20195": spare})


@pytest.mark.e2e
def test_a_group_whose_zone_is_gone_at_start_is_left_out_with_a_warning(
        cp: ControlPlane, caplog: pytest.LogCaptureFixture) -> None:
    async def body(lab: Lab) -> None:
        assert lab.dp.groups == {}  # the zone deleted after the check: its group is not used this run
        assert lab.dp.core is not None
        device = await lab.device("20194-01", "near")
        await wait_for(lambda: device.statistics().clock_ready, 15, "the device in sync")
        bid, _ = await anyio.to_thread.run_sync(lambda: lab.dp.start_live(
            LiveSource(port=0), ["48"], cls=1, lvl=1, policy="resume", title="Mic"))
        await wait_for(lambda: bid in device.broadcasts, 10, "the device joined")
        assert [key for key, _ in lab.dp.core.destinations(bid)] == [device.public_key]  # by unicast
        await anyio.to_thread.run_sync(lab.dp.stop_broadcast, bid)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(body, cp, {"99": free_group(random.Random(98))})
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(m.startswith("zone 99 is not in the database: its multicast group ") for m in said), said


@pytest.mark.e2e
def test_two_zones_sharing_a_group_each_play_their_own_stream(cp: ControlPlane, radio: str) -> None:
    group = free_group(random.Random(f"shared {radio}"))
    frames = 50

    async def body(lab: Lab) -> None:
        one = await lab.device("20194-01", "one")
        two = await lab.device("20194-02", "two")
        await wait_for(lambda: one.statistics().clock_ready and two.statistics().clock_ready, 15, "devices in sync")

        def start(zone: str) -> int:
            bid, _ = lab.dp.start_live(LiveSource(url=radio), [zone], cls=1, lvl=1, policy="resume", title=zone)
            return bid

        first = await anyio.to_thread.run_sync(start, "20194-01")
        second = await anyio.to_thread.run_sync(start, "20194-02")
        await wait_for(lambda: len(one.log.for_bid(first)) >= frames and len(two.log.for_bid(second)) >= frames,
                       20, f"{frames} frames of its own stream on each device")
        assert lab.dp.core is not None
        assert lab.dp.core.destinations(first) == lab.dp.core.destinations(second) == [
            (("group", group), parse_group(group))]
        assert one.groups() == two.groups() == {group}
        # Each hears the other's stream on the shared group, and drops it: it joined only its own broadcast.
        assert one.log.for_bid(second) == []
        assert two.log.for_bid(first) == []
        await wait_for(lambda: one.drop_counts["UnknownKeyError"] >= frames
                       and two.drop_counts["UnknownKeyError"] >= frames, 10, "the other zone's packets dropped")
        for bid in (first, second):
            await anyio.to_thread.run_sync(lab.dp.stop_broadcast, bid)

    run(body, cp, {"20194-01": group, "20194-02": group})
