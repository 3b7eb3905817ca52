"""Device and server restarts, bye, and membership kept right under any sequence of registry changes
(PROTOCOL.md sections 3.11, 4.5, 7.1, 7.6)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from streamer_kit import SERVER, CoreNode, KitDevice, World

from loa.protocol.control import Bye, Config, Join, Leave
from loa.streamer.core import StreamerCore
from loa.streamer.sources import ToneSource
from loa.streamer.status import DeviceOffline, DeviceOnline


def test_a_restarted_device_says_hello_and_gets_its_whole_state_again() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["D1"], world.now)
    world.run_for(1.0)
    address = world.address(device)
    world.net.detach(address)
    reborn = KitDevice(server_public=world.core.public_key, static_private=device.static_private, seed=999)
    world.net.attach(address, reborn)
    reborn.start(world.now)  # a new boot: a new handshake, then hello
    assert world.run_until(lambda: len(reborn.packets(bid)) > 10, 10.0)
    assert reborn.of_type(Config)[0].values.zones == ("P", "D1", "C11")
    (join,) = reborn.of_type(Join)
    assert join.bid == bid
    assert join.key == device.joined[bid].key
    assert any(isinstance(e, DeviceOnline) and e.restarted for e in world.core.events())


def test_bye_forgets_the_session_and_the_next_one_is_sent_everything() -> None:
    world = World()
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    bid = world.core.start_broadcast(ToneSource(), ["C11"], world.now)
    world.run_for(0.5)
    device.conn.send(Bye(reason="shutting down"), world.now)
    device.conn.close()
    world.run_for(0.5)
    assert not world.core.device_status(device.public_key).online
    assert any(isinstance(e, DeviceOffline) and e.reason == "bye: shutting down" for e in world.core.events())
    assert world.core.destinations(bid) == []
    before = len(device.of_type(Join))
    device.conn.connect(world.now)  # the same boot: no hello, but a new session
    assert world.run_until(lambda: len(device.of_type(Join)) > before, 10.0)
    assert world.core.destinations(bid) == [(device.public_key, world.address(device))]


def test_a_restarted_server_reissues_config_and_broadcasts_to_reconnecting_devices() -> None:
    world = World()
    device = world.device("C21")
    assert world.run_until(lambda: world.online(device), 10.0)
    old = world.core
    world.net.detach(SERVER)
    core = StreamerCore(static_private=world.server_static, zones=world.zones, registry=world.registry,
                        authorities=world.authorities, epoch_ns=old.epoch_ns, random_bytes=world.rng.randbytes,
                        rng=world.rng, first_bid=1000)
    node = CoreNode(core)
    node.net = world.net
    world.net.attach(SERVER, node)
    bid = core.start_broadcast(ToneSource(), ["P"], world.now)
    configs = len(device.of_type(Config))
    # the device notices the silence (DEAD_AFTER at most), handshakes again, sees the new boot
    assert world.run_until(lambda: len(device.packets(bid)) > 10, 60.0)
    assert len(device.of_type(Config)) == configs + 1
    assert device.joined[bid].bid == 1000
    assert core.statistics().drops.get("UnknownKeyError", 0) >= 1  # its old session's datagrams


ZONES = ["P", "D1", "D2", "C11", "C12", "C21", "H111"]
OPS = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(ZONES), st.sampled_from(["speaker", "board"])),
    st.tuples(st.just("move"), st.integers(0, 7), st.sampled_from(ZONES)),
    st.tuples(st.just("revoke"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 7), st.none()),
    st.tuples(st.just("start"), st.lists(st.sampled_from(ZONES), min_size=1, max_size=2), st.none()),
    st.tuples(st.just("stop"), st.integers(0, 3), st.none()),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(OPS, max_size=30))
def test_members_are_exactly_the_enrolled_speakers_of_the_zones(ops: list[tuple[str, object, object]]) -> None:
    world = World()
    core = world.core
    keys: list[bytes] = []
    bids: list[int] = []
    for op, a, b in ops:
        now = world.now
        if op == "add":
            keys.append(bytes([len(keys) + 1]) * 32)
            core.add_device(keys[-1], str(a), now, kind=str(b))
        elif op == "start":
            bids.append(core.start_broadcast(ToneSource(), list(a), now))  # type: ignore[arg-type]
        elif op == "stop" and bids:
            bid = bids.pop(int(a) % len(bids))  # type: ignore[call-overload]
            core.stop_broadcast(bid, now)
        elif keys:
            key = keys[int(a) % len(keys)]  # type: ignore[call-overload]
            if key not in core.registry:
                continue
            if op == "move":
                core.update_device(key, now, zone=b)
            elif op == "revoke":
                core.update_device(key, now, enrolled=b)
            else:
                core.remove_device(key, now)
        for bid in bids:
            status = core.broadcast_status(bid)
            covering = world.zones.covering(status.zones)
            expected = core.registry.in_zones(covering, kinds=("speaker",))
            members = {k for k in keys if k in core.registry and bid in core.device_status(k).broadcasts}
            assert members == expected
            assert status.members == len(expected)
        for key in keys:
            if key in core.registry:
                assert set(core.device_status(key).broadcasts) <= set(bids)
    world.run_for(0.2)  # and the frame clocks run with whatever happened
    assert Leave not in {type(m) for d in world.devices for m in d.messages}


@settings(max_examples=200, deadline=None)
@given(first=st.integers(0, 2**32 - 1),
       steps=st.lists(st.one_of(st.none(), st.integers(0, 40)), max_size=60))
def test_allocated_broadcast_ids_are_never_ones_used_before(first: int, steps: list[int | None]) -> None:
    """allocate_bid (None) among ids claimed from elsewhere (an authority's signed alert: ``first`` + the offset):
    no id given out twice, none equal to one claimed, and only claimed ids ahead of the counter remembered."""
    core = StreamerCore(static_private=bytes(32), zones=World().zones, registry=World().registry, first_bid=first)
    used: set[int] = set()
    for step in steps:
        if step is None:
            bid = core.allocate_bid()
            assert bid not in used
            assert bid != 0
        else:
            bid = (first + step) & 0xFFFFFFFF
            if bid == 0:
                continue
            core._claim_bid(bid)
        used.add(bid)
    assert len(core._used_bids) <= sum(1 for s in steps if s is not None)
    assert all((bid - core._next_bid) & 0xFFFFFFFF < 1 << 31 for bid in core._used_bids)  # only ids ahead
