"""The soak fleet's RTP filter: the kernel program keeps what :func:`keeps` says, over real loopback sockets; and
its record of when each device became ready to play an alert, and of the devices that did not (:class:`Readiness`)."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.bench._soak_fleet import (
    ARRIVAL_BIN_S,
    HANDLED_BIN_S,
    READY_KEPT,
    RTP_HEADER,
    STRAGGLERS_AFTER_S,
    STRAGGLERS_SAMPLE,
    Readiness,
    attach,
    keeps,
    program,
    straggler,
)
from loa.devices.broadcasts import Broadcast
from loa.devices.core import SpeakerCore
from loa.devices.live import LiveStream
from loa.protocol.priority import Arbiter, Class, Level


def rtp(seq: int, *, payload_type: int = 111, marker: bool = False, size: int = 80) -> bytes:
    second = payload_type | (0x80 if marker else 0)
    return bytes([0x80, second]) + seq.to_bytes(2, "big") + bytes(range(8)) + bytes(size - RTP_HEADER)


@pytest.mark.parametrize("keep", [0, 3, 6, 100])
def test_keep_must_be_a_power_of_two(keep: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        program(keep)


def test_keeps_one_rtp_packet_in_k_and_everything_else() -> None:
    assert [seq for seq in range(40) if keeps(rtp(seq), 8)] == [0, 8, 16, 24, 32]
    assert keeps(rtp(65_535), 1)
    assert keeps(bytes([4, 1, 0, 0]) + bytes(60), 8)  # a transport datagram
    assert keeps(bytes([0x80, 200]) + bytes(30), 8)  # RTCP sender report
    assert keeps(bytes([0x81, 203, 0, 1]) + bytes(8), 8)  # RTCP BYE
    assert keeps(bytes([0x80, 111, 0, 1]), 8)  # shorter than an RTP header: the device judges it
    assert not keeps(rtp(3, marker=True), 8)


@given(st.binary(min_size=RTP_HEADER, max_size=64), st.sampled_from([1, 2, 4, 16, 1024]))
def test_what_is_not_rtp_always_passes(data: bytes, keep: int) -> None:
    is_rtp = data[0] & 0xC0 == 0x80 and not 192 <= data[1] <= 223
    if not is_rtp or keep == 1:
        assert keeps(data, keep)


@pytest.mark.e2e
def test_the_kernel_filter_matches_keeps() -> None:
    keep = 4
    datagrams = [rtp(seq) for seq in range(64)] + [rtp(seq, marker=True) for seq in range(64, 72)]
    datagrams += [bytes([4, 1, 0, 0]) + bytes(40), bytes([1, 1, 0, 0]) + bytes(144), bytes([0x80, 200]) + bytes(26),
                  bytes([0x80, 111]), b"", bytes([0x80, 230, 0, 8]) + bytes(20), bytes([0x80, 230, 0, 9]) + bytes(20)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if not attach(rx, keep):
            pytest.skip("this kernel takes no socket filters (SO_ATTACH_FILTER)")
        for data in datagrams:
            tx.sendto(data, rx.getsockname())
        rx.setblocking(False)
        received = []
        deadline = time.monotonic() + 5
        expected = [d for d in datagrams if keeps(d, keep)]
        while len(received) < len(expected) and time.monotonic() < deadline:
            try:
                received.append(rx.recv(2048))
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.05)  # anything the filter wrongly passed has arrived by now
        with pytest.raises(BlockingIOError):
            rx.recv(2048)
    assert received == expected
    assert len(expected) < len(datagrams)  # the filter did drop


# -- readiness -------------------------------------------------------------------------------------------------


def _device() -> Any:
    """What :class:`Readiness` reads of a device: its arbiter (the real one) and its broadcasts (real ones)."""
    return SimpleNamespace(arbiter=Arbiter(), broadcasts={})


def _stream(bid: int) -> LiveStream:
    return LiveStream(bid, 0x5000 + bid, bytes(30), delay_ms=500, group="239.255.0.1:5000")


_observe = st.tuples(st.just("observe"), st.integers(0, 1), st.floats(0, 100), st.floats(0, 100))
_step = st.one_of(
    st.tuples(st.just("arrive"), st.integers(0, 1), st.integers(1, 4),
              st.sampled_from([Class.EMERGENCY, Class.EMERGENCY, Class.PRIORITY, Class.NORMAL]),
              st.sampled_from(list(Level)), st.booleans()),
    st.tuples(st.just("join"), st.integers(0, 1), st.integers(1, 4)),
    st.tuples(st.just("end"), st.integers(0, 1), st.integers(1, 4)),
    _observe, _observe,
)


@settings(max_examples=300)
@given(st.lists(_step, max_size=80))
def test_readiness_counts_each_device_once_per_emergency_broadcast_at_the_first_datagram_it_was_ready(
        steps: list[tuple[Any, ...]]) -> None:
    """Two devices take broadcasts of every class and level, with and without their stream, preempted, resumed
    and ended in any order, and are observed at any times. Each (device, emergency broadcast) is counted once, in
    the bins of the first observation that found the broadcast current and its stream known; and counted back
    once, by arrival, at the first observation after that which found a broadcast of another class with its
    stream current, unless an observation found another emergency broadcast ready first; nothing else is
    counted."""
    devices = [_device() for _ in range(2)]
    readiness = Readiness(len(devices))
    first: dict[tuple[int, int], tuple[float, float]] = {}
    pending: dict[int, int] = {}  # device -> the emergency broadcast it was last counted for, not yet back
    back: dict[int, Counter[int]] = {}
    for step in steps:
        kind, index = step[0], step[1]
        device = devices[index]
        if kind == "arrive":
            bid, cls, lvl, live = step[2], step[3], step[4], step[5]
            if bid not in device.broadcasts:
                device.broadcasts[bid] = Broadcast(bid, cls, lvl, "resume", live=_stream(bid) if live else None)
                device.arbiter.arrive(bid, cls, lvl, "resume")
        elif kind == "join":
            broadcast = device.broadcasts.get(step[2])
            if broadcast is not None and broadcast.live is None:
                broadcast.live = _stream(step[2])
        elif kind == "end":
            device.arbiter.end(step[2])
        else:
            arrival, handled = step[2], step[3]
            readiness.observe(index, device, arrival, handled)
            bid = device.arbiter.current
            broadcast = device.broadcasts.get(bid)
            if broadcast is None or broadcast.live is None:
                continue
            if broadcast.cls == Class.EMERGENCY and (index, bid) not in first:
                first[(index, bid)] = (arrival, handled)
                pending[index] = bid
            elif broadcast.cls != Class.EMERGENCY and index in pending:
                back.setdefault(pending.pop(index), Counter())[int(arrival / ARRIVAL_BIN_S)] += 1
    arrived: dict[int, Counter[int]] = {}
    handled: dict[int, Counter[int]] = {}
    for (_, bid), (a, h) in first.items():
        arrived.setdefault(bid, Counter())[int(a / ARRIVAL_BIN_S)] += 1
        handled.setdefault(bid, Counter())[int(h / HANDLED_BIN_S)] += 1
    assert readiness.arrived == arrived
    assert readiness.handled == handled
    assert {bid: bins for bid, bins in readiness.back.items() if bins} == back
    assert set(readiness.back) == set(arrived)  # a histogram for each broadcast counted, empty until one is back
    assert readiness.status() == {
        "ready_arrived": {str(b): {str(k): n for k, n in c.items()} for b, c in arrived.items()},
        "ready_handled": {str(b): {str(k): n for k, n in c.items()} for b, c in handled.items()},
        "live_back_arrived": {str(b): {str(k): n for k, n in back.get(b, Counter()).items()} for b in arrived},
        "not_ready": {}}  # nothing diagnosed until :meth:`Readiness.diagnose` is called


def test_a_device_is_counted_back_once_by_the_arrival_that_found_it_back() -> None:
    """On the live stream, preempted by an alert, then the live stream again: counted ready once, and back once,
    in the arrival bin of the first datagram after the alert's end, however many datagrams follow."""
    device = _device()
    readiness = Readiness(1)
    device.broadcasts[1] = Broadcast(1, Class.NORMAL, 2, "resume", live=_stream(1))
    device.arbiter.arrive(1, Class.NORMAL, 2, "resume")
    readiness.observe(0, device, 1.0, 1.0)  # on the live stream: nothing to count
    device.broadcasts[9] = Broadcast(9, Class.EMERGENCY, 2, "resume", live=_stream(9))
    device.arbiter.arrive(9, Class.EMERGENCY, 2, "resume")
    readiness.observe(0, device, 2.0, 7.0)
    readiness.observe(0, device, 3.0, 8.0)
    device.arbiter.end(9)
    for arrival in (5.0, 6.0, 7.0):  # back: the first of these counts, handled late (20 s) as a slow fleet does
        readiness.observe(0, device, arrival, 20.0)
    assert readiness.arrived == {9: Counter({int(2.0 / ARRIVAL_BIN_S): 1})}
    assert readiness.back == {9: Counter({int(5.0 / ARRIVAL_BIN_S): 1})}


def test_readiness_keeps_the_newest_broadcasts() -> None:
    device = _device()
    readiness = Readiness(1)
    live = 1000
    device.broadcasts[live] = Broadcast(live, Class.NORMAL, 2, "resume", live=_stream(live))
    device.arbiter.arrive(live, Class.NORMAL, 2, "resume")
    bids = list(range(1, READY_KEPT + 4))
    for bid in bids:  # one alert after another over the live stream, each ended before the next
        device.broadcasts[bid] = Broadcast(bid, Class.EMERGENCY, 2, "resume", live=_stream(bid))
        device.arbiter.arrive(bid, Class.EMERGENCY, 2, "resume")
        readiness.observe(0, device, float(bid), float(bid))
        device.arbiter.end(bid)
        readiness.observe(0, device, bid + 0.5, bid + 0.5)  # back on the live stream
    assert list(readiness.arrived) == bids[-READY_KEPT:]
    assert list(readiness.handled) == bids[-READY_KEPT:]
    assert list(readiness.back) == bids[-READY_KEPT:]
    assert all(sum(bins.values()) == 1 for bins in readiness.arrived.values())
    assert all(bins == Counter({int((bid + 0.5) / ARRIVAL_BIN_S): 1}) for bid, bins in readiness.back.items())


def _real_devices(count: int) -> list[SpeakerCore]:
    """Reference devices, never connected (no socket: :func:`straggler` reads only their state)."""
    return [SpeakerCore(static_private=bytes([i + 1]) * 32, server_public=bytes(32),
                        server_address=("127.0.0.1", 9), count_only=True) for i in range(count)]


def test_devices_not_ready_are_described_once_after_stragglers_after_s() -> None:
    """Of three devices, two become ready for alert 9 at t=100; the third, which holds the alert but has not been
    told its stream, is counted and described once, STRAGGLERS_AFTER_S after the first was ready, under its
    number in the whole fleet."""
    cores = _real_devices(3)
    readiness = Readiness(len(cores))
    for i, core in enumerate(cores):
        core.broadcasts[9] = Broadcast(9, Class.EMERGENCY, 2, "resume", live=_stream(9) if i < 2 else None)
        core.arbiter.arrive(9, Class.EMERGENCY, 2, "resume")
        readiness.observe(i, core, 100.0, 100.0 + i)
    readiness.diagnose(100.0 + STRAGGLERS_AFTER_S - 0.1, cores, first_index=5000)
    assert readiness.status()["not_ready"] == {}
    readiness.diagnose(100.0 + STRAGGLERS_AFTER_S, cores, first_index=5000)
    found = readiness.status()["not_ready"]["9"]
    assert found["devices"] == 1
    [described] = found["sample"]
    assert described == straggler(5002, cores[2], 9)
    assert {k: described[k] for k in ("device", "connected", "current", "holds", "stream", "ended", "clock_ready")} \
        == {"device": 5002, "connected": False, "current": 9, "holds": True, "stream": False, "ended": False,
            "clock_ready": False}
    assert described["clock"] == {"accepted": 0, "negative_delay": 0, "absurd": 0, "inconsistent": 0, "resets": 0,
                                  "rtt": 0.2, "probing": False}  # no exchange, the RTT assumed, no session
    cores[2].broadcasts[9].live = _stream(9)  # ready later: what was found stays as it was found
    readiness.observe(2, cores[2], 200.0, 200.0)
    readiness.diagnose(300.0, cores, first_index=5000)
    assert readiness.status()["not_ready"]["9"] == found
    json.dumps(readiness.status())  # what the status file carries


def test_no_straggler_sample_is_larger_than_stragglers_sample() -> None:
    cores = _real_devices(STRAGGLERS_SAMPLE + 3)
    readiness = Readiness(len(cores))
    cores[0].broadcasts[4] = Broadcast(4, Class.EMERGENCY, 2, "resume", live=_stream(4))
    cores[0].arbiter.arrive(4, Class.EMERGENCY, 2, "resume")
    readiness.observe(0, cores[0], 1.0, 1.0)
    readiness.diagnose(1.0 + STRAGGLERS_AFTER_S, cores)
    found = readiness.status()["not_ready"]["4"]
    assert found["devices"] == STRAGGLERS_SAMPLE + 2
    assert [d["device"] for d in found["sample"]] == list(range(1, STRAGGLERS_SAMPLE + 1))
