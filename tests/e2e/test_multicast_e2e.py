"""IP multicast per zone on loopback (PROTOCOL.md section 5.7): a streamer bound to 127.0.0.1 with a group for zone
A sends a live programme once per packet to the group; reference devices that say ``multicast`` in ``hello`` join
it on the interface of their own bind address (127.0.0.1) and play it, a device without the capability gets it by
unicast, and the broadcast's fan-out holds the group and that one device only. The same for a
:class:`~loa.devices.fleet_host.FleetHost`: its decoding devices join and play, its counting devices do not join, and
nobody gets the stream by unicast."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest
from _site import SAMPLE_RATE, Site, frame_counts, read_wav, wait_for, windowed_tone_correlation

from loa.bench.alert import free_group
from loa.devices.content import MemoryStore
from loa.devices.core import DEFAULT_CAPS, SpeakerCore
from loa.devices.fleet_host import FleetHost
from loa.devices.simclock import SimulatedClock
from loa.devices.sinks import CounterSink
from loa.protocol.noise import x25519_public
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.sources import ToneSource
from loa.streamer.zones import Zone, ZoneTree

pytestmark = pytest.mark.e2e
TONE = 440.0
FRAMES = 150  # 3 s of programme on every device


def _group_address(group: str) -> tuple[str, int]:
    host, _, port = group.rpartition(":")
    return host, int(port)


@pytest.mark.anyio
async def test_devices_on_loopback_play_a_zone_stream_from_its_group(anyio_backend: str, tmp_path: Path) -> None:
    group = free_group(random.Random(f"{anyio_backend}-{tmp_path}"))
    site = Site(tmp_path, seed=61, groups={"A": group})
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await site.start_server(tg)
            members = [site.add_device("A") for _ in range(3)]
            unicast = site.add_device("A", record=False, caps=tuple(c for c in DEFAULT_CAPS if c != "multicast"))
            await wait_for(lambda: all(d.core.statistics().clock_ready for d in site.devices), 10, "clock sync")
            bid = site.service.start_broadcast(ToneSource(TONE), ["A"])
            await wait_for(lambda: all(len(d.core.log.for_bid(bid)) >= FRAMES for d in site.devices), 10,
                           f"{FRAMES} frames on every device")
            destinations = site.core.destinations(bid)
            addresses = {d.name: d.runner.local_address for d in site.devices}
            joined = [d.runner.groups() for d in members]
            wanted = [d.core.groups() for d in members]
            during = [(d.runner.stats.received, d.runner.stats.group_received) for d in members]
            site.service.stop_broadcast(bid)
            await wait_for(lambda: not any(d.runner.groups() for d in members), 5, "every device to leave the group")
            site.close()
            await site.stop_server()
            tg.cancel_scope.cancel()
    print(f"{anyio_backend}: group {group}; destinations {[key for key, _ in destinations]}; "
          f"received (all, on the group) {during}; unicast device received {unicast.runner.stats.received}")
    # The fan-out: the group once, plus the one member that cannot join, at its session address.
    assert sorted(destinations, key=repr) == sorted(
        [(("group", group), _group_address(group)), (unicast.public_key, addresses[unicast.name])], key=repr)
    member_addresses = {addresses[d.name] for d in members}
    assert not member_addresses & {address for _, address in destinations}
    assert joined == [{group}] * 3
    assert wanted == [{group}] * 3
    for received, on_group in during:
        assert on_group >= FRAMES  # every frame played came on the group
        assert received - on_group < FRAMES // 2  # the session carried control, not the stream
    assert unicast.core.groups() == set()
    assert unicast.runner.stats.group_received == 0
    assert unicast.runner.stats.group_errors == 0
    assert len(unicast.core.log.for_bid(bid)) >= FRAMES
    for device in members:
        assert device.runner.stats.group_errors == 0
        counts = frame_counts(device.core.log.for_bid(bid))
        assert counts["slots"] >= FRAMES
        assert counts["packet"] + counts["fec"] >= 0.99 * counts["slots"], (device.name, counts)
        assert device.recorder is not None
        heard = [p for p in device.recorder.played if p.info.bid == bid and p.info.kind != "plc"]
        t0 = device.recorder.played[0].at
        start = round((heard[0].at - t0 + 0.06) * SAMPLE_RATE)
        end = round((heard[-1].at - t0 - 0.06) * SAMPLE_RATE) + heard[-1].info.samples
        recorded = read_wav(device.recorder.path)[start:end]
        assert len(recorded) >= 2 * SAMPLE_RATE
        corr = windowed_tone_correlation(recorded, TONE)
        print(f"  {device.name}: {counts['slots']} slots, packet {counts['packet']}, fec {counts['fec']}, "
              f"plc {counts['plc']}; tone correlation {corr:.4f}")
        assert corr >= 0.95, (device.name, corr)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_fleet_host_joins_groups_for_its_decoding_devices_only(anyio_backend: str) -> None:
    count, decoding = 20, 2
    rng = random.Random(62)
    group = free_group(rng)
    zones = ZoneTree([Zone("A", "Xã A")])
    server = StreamerCore(static_private=rng.randbytes(32), zones=zones, groups={"A": group},
                          epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
    keys = [rng.randbytes(32) for _ in range(count)]
    for i, key in enumerate(keys):
        server.add_device(x25519_public(key), "A", anyio.current_time(), name=f"fleet-{i}")
    service = StreamerService(server, open_udp_socket("127.0.0.1", 0, multicast=True))
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            devices = []
            for i, key in enumerate(keys):
                decode = i < decoding
                core = SpeakerCore(static_private=key, server_public=server.public_key,
                                   server_address=service.address, sink=CounterSink(decode=decode),
                                   store=MemoryStore(1 << 20), batch=0.05, count_only=not decode,
                                   log_limit=2_000 if decode else 0, rng=random.Random(rng.random()))
                devices.append((core, SimulatedClock(rng.uniform(-50, 50), rng.uniform(-10, 10))))
            cores = [core for core, _ in devices]
            host = FleetHost(devices, service.address, bind_host="127.0.0.1", start_rate=100.0,
                             priority=decoding, timestamps=True)
            tg.start_soon(host.run)
            await wait_for(lambda: server.statistics().devices_online == count
                           and all(c.statistics().clock_ready for c in cores[:decoding]), 20, "the fleet")
            bid = service.start_broadcast(ToneSource(TONE), ["A"])
            await wait_for(lambda: all(len(c.log.for_bid(bid)) >= 50 for c in cores[:decoding]), 10,
                           "1 s of programme on the decoding devices")
            destinations = server.destinations(bid)
            joined = [host.groups(i) for i in range(count)]
            wanted = [c.groups() for c in cores]
            played = [len(c.log.for_bid(bid)) for c in cores[:decoding]]
            media = [c.statistics().received for c in cores]
            stats = host.stats
            service.stop_broadcast(bid)
            await wait_for(lambda: not any(host.groups(i) for i in range(count)), 5, "the decoding devices to leave")
            tg.cancel_scope.cancel()
    service.sock.close()
    print(f"{anyio_backend}: {count} devices, {decoding} decoding; destinations {[k for k, _ in destinations]}; "
          f"frames played {played}; media packets counted {media}; fleet received {stats.received}, on the "
          f"group {stats.group_received}")
    assert destinations == [(("group", group), _group_address(group))]  # nobody by unicast
    assert wanted == [{group}] * count  # every device was told the group
    assert joined == [{group}] * decoding + [set()] * (count - decoding)  # only the decoding ones joined it
    assert stats.group_received >= decoding * 50
    assert stats.group_errors == 0
    assert all(n >= 50 for n in media[:decoding])
    assert media[decoding:] == [0] * (count - decoding)  # counting devices: no membership, no stream
    assert host.groups(0) == set()  # closed with the host
