"""Where the reference device joins multicast groups, and which groups it refuses (PROTOCOL.md section 5.7); a
FleetHost's group taps for its counting devices, on real loopback sockets (marked e2e). The decoding devices'
joining, on real sockets, is in tests/e2e/test_multicast_e2e.py."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.bench.alert import free_group
from loa.devices.core import SpeakerCore
from loa.devices.fleet_host import FleetHost
from loa.devices.runner import ANY_INTERFACE, group_interface, open_group
from loa.devices.simclock import SimulatedClock
from loa.protocol.noise import x25519_public
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.sources import ToneSource
from loa.streamer.zones import Zone, ZoneTree


@pytest.mark.parametrize(("bind_host", "interface"), [
    ("127.0.0.1", "127.0.0.1"),
    ("192.0.2.7", "192.0.2.7"),
    ("0.0.0.0", ANY_INTERFACE),  # a wildcard bind: the routing table picks the interface
    (None, ANY_INTERFACE),
    ("::1", ANY_INTERFACE),
    ("::", ANY_INTERFACE),
    ("::ffff:127.0.0.1", ANY_INTERFACE),
    ("localhost", ANY_INTERFACE),
    ("", ANY_INTERFACE),
])
def test_groups_are_joined_on_the_interface_of_a_specific_ipv4_bind(bind_host: str | None, interface: str) -> None:
    assert group_interface(bind_host) == interface


@pytest.mark.parametrize("group", [
    "[ff15::1]:5004",  # IPv6: not joined by the reference device
    "10.0.0.1:5004",  # not a multicast address
    "239.255.1.1:0",
    "239.255.1.1:65536",
    "239.255.1.1:-1",
    "239.255.1.1:port",
    "239.255.1.1",
    "239.255.1.256:5004",
    "",
])
def test_a_group_that_is_not_an_ipv4_multicast_address_and_port_is_refused(group: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ by cause; the type is the contract
        open_group(group, "127.0.0.1")


@given(st.text(max_size=40))
def test_any_text_as_a_group_is_refused_with_value_error_or_opened(text: str) -> None:
    """Whatever a server names as a group, joining it raises ValueError or OSError, or gives a socket."""
    try:
        sock = open_group(text, "127.0.0.1")
    except (ValueError, OSError):
        return
    assert isinstance(sock, socket.socket)
    sock.close()


# -- a FleetHost's group taps, on real sockets (loopback) ---------------------------------------------------------


async def _until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)
    assert condition(), what


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_counting_devices_follow_a_group_through_one_shared_tap(anyio_backend: str) -> None:
    """Zones A and A2 share a group, B has none. Devices of A tap it when a stream to A starts, those of A2 join
    that tap in the middle (their count starts there), and each gets only its own stream's packets; B's devices
    tap nothing. When A's stream ends its devices leave while the tap stays for A2's; after the last, it closes."""
    rng = random.Random(71)
    group = free_group(rng)
    zones = ZoneTree([Zone("A", "Xã A"), Zone("A2", "Xã A2"), Zone("B", "Xã B")])
    server = StreamerCore(static_private=rng.randbytes(32), zones=zones, groups={"A": group, "A2": group},
                          epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
    homes = ["A"] * 3 + ["A2"] * 2 + ["B"] * 2
    keys = [rng.randbytes(32) for _ in homes]
    for i, (key, zone) in enumerate(zip(keys, homes, strict=True)):
        server.add_device(x25519_public(key), zone, anyio.current_time(), name=f"tap-{i}")
    a, a2, b = range(3), range(3, 5), range(5, 7)
    service = StreamerService(server, open_udp_socket("127.0.0.1", 0, multicast=True))
    devices = [(SpeakerCore(static_private=key, server_public=server.public_key, server_address=service.address,
                            count_only=True, log_limit=0, rng=random.Random(rng.random())), SimulatedClock())
               for key in keys]
    cores = [core for core, _ in devices]
    host = FleetHost(devices, service.address, bind_host="127.0.0.1", start_rate=100.0, taps=True)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            tg.start_soon(host.run)
            await _until(lambda: server.statistics().devices_online == len(homes), "every device online")
            first = service.start_broadcast(ToneSource(440.0), ["A"])
            await _until(lambda: all(cores[i].state == (first, "ip") for i in a), "A's devices on the group stream")
            tapped_a = [host.tapped(i) for i in range(len(homes))]
            at_join = host.taps()[group]
            second = service.start_broadcast(ToneSource(880.0), ["A2"])
            await _until(lambda: all(cores[i].state == (second, "ip") for i in a2), "A2's devices on theirs")
            await anyio.sleep(0.5)
            taps = host.taps()
            received = [host.group_received(i) for i in range(len(homes))]
            counted = [cores[i].statistics().received for i in range(len(homes))]
            destinations = [server.destinations(bid) for bid in (first, second)]
            service.stop_broadcast(first)
            await _until(lambda: not any(host.tapped(i) for i in a), "A's devices to leave")
            after_first = (host.taps(), [host.tapped(i) for i in a2])
            service.stop_broadcast(second)
            await _until(lambda: not host.taps(), "the tap to close after its last device")
            tg.cancel_scope.cancel()
    finally:
        service.sock.close()
    print(f"group {group}: taps {taps}; received since joining {received}; media counted {counted}")
    for bid_destinations in destinations:
        assert [key for key, _ in bid_destinations] == [("group", group)]  # nobody by unicast
    assert tapped_a == [{group}] * 3 + [set()] * 4  # A2's stream had not started; B has no group
    assert list(taps) == [group]  # one socket for every counting device on the group
    total = taps[group]
    for i in a:
        assert total - at_join < received[i] <= total  # counting since before A2's devices came
    for i in a2:
        assert 0 < received[i] <= total - at_join  # counted from their join on
    assert [received[i] for i in b] == [0, 0]
    assert all(counted[i] > 0 for i in [*a, *a2])  # fed through the counting path
    assert [counted[i] for i in b] == [0, 0]
    assert [cores[i].drops().get("UnknownKeyError", 0) for i in [*a, *a2]] == [0] * 5  # only their own stream
    assert after_first == ({group: after_first[0][group]}, [{group}, {group}])
    assert host.stats.group_errors == 0
    assert all(host.tapped(i) == set() for i in range(len(homes)))
