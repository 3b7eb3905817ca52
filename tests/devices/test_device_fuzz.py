"""Any datagram from anywhere: the device core never raises, counts every drop, and keeps working."""

from __future__ import annotations

import functools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverdriver import SERVER, World, tone_payloads

from loa.devices.simnode import SimulatedDevice


@functools.cache
def _joined() -> tuple[World, SimulatedDevice, int]:
    """A connected device with a live stream joined (built once; garbage changes nothing in it)."""
    world = World(60)
    node = world.add_device()
    world.run(5.0)
    stream = world.server.start_stream(5, [world.pub(node)], payloads=tone_payloads(20), start_in=0.1, frames=50)
    world.run(2.0)
    assert node.core.arbiter.current == 5
    return world, node, stream.ssrc


def _rtp_like(ssrc: int) -> st.SearchStrategy[bytes]:
    header = st.tuples(st.integers(0x80, 0xBF), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1))
    return st.builds(
        lambda h, tail: struct.pack("!BBHII", *h, ssrc) + tail, header, st.binary(max_size=200)
    )


def _loa_like() -> st.SearchStrategy[bytes]:
    return st.builds(lambda t, rest: bytes([t, 1, 0, 0]) + rest, st.integers(1, 4), st.binary(max_size=200))


ADDRESSES = st.sampled_from([SERVER, ("203.0.113.66", 4433), ("192.0.2.1", 4434)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_datagrams_never_raise_and_are_counted(data: st.DataObject) -> None:
    world, node, ssrc = _joined()
    core = node.core
    datagram = data.draw(st.one_of(st.binary(max_size=1300), _rtp_like(ssrc), _loa_like()), label="datagram")
    source = data.draw(ADDRESSES, label="source")
    before = sum(core.drops().values())
    core.receive_datagram(datagram, source, node.clock.local(world.net.now))
    assert sum(core.drops().values()) == before + 1
    assert core.arbiter.current == 5


def test_the_device_still_works_after_the_garbage() -> None:
    world, node, _ = _joined()
    world.run(3.0)
    stats = node.core.statistics()
    assert stats.connected
    assert stats.played == 50
