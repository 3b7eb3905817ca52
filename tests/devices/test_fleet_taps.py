"""Group taps on real loopback sockets: one socket per group whatever the number of devices, each device counted
from when it joined, each stream's newest RTP packet kept (RTCP and other datagrams only counted), at most
``TAP_SSRCS`` streams remembered, the socket closed after its last device. (Feeding the devices through their
counting path is shown end to end in ``test_device_runner_groups.py``.)"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.devices.fleet_taps import TAP_SSRCS, GroupTaps
from loa.devices.runner import IoStatistics


class _Groups:
    """Stands in for joining a group: a plain UDP socket on loopback per "group", the way the host opens one."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.opened: dict[str, list[socket.socket]] = {}

    def __call__(self, group: str) -> socket.socket | None:
        if group in self.refuse:
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.opened.setdefault(group, []).append(sock)
        return sock

    def close(self) -> None:
        for socks in self.opened.values():
            for sock in socks:
                sock.close()


@pytest.fixture
def groups() -> Iterator[_Groups]:
    g = _Groups(refuse=frozenset({"refused"}))
    yield g
    g.close()


def _rtp(ssrc: int, seq: int, payload_type: int = 96) -> bytes:
    return bytes([0x80, payload_type]) + seq.to_bytes(2, "big") + bytes(4) + ssrc.to_bytes(4, "big") + b"opus"


def _deliver(taps: GroupTaps, sock: socket.socket, datagrams: list[bytes]) -> int:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data in datagrams:
            sender.sendto(data, sock.getsockname())
    finally:
        sender.close()
    received, deadline = 0, time.monotonic() + 5.0
    while received < len(datagrams) and time.monotonic() < deadline:
        received += taps.receive(sock.fileno())
        time.sleep(0.001)
    return received


def test_one_socket_per_group_counted_per_device_and_closed_after_the_last(groups: _Groups) -> None:
    stats = IoStatistics()
    taps = GroupTaps(stats, groups)
    taps.sync(0, {"g"})
    taps.sync(1, {"g", "h"})
    assert [len(groups.opened[g]) for g in ("g", "h")] == [1, 1]
    (g_sock,) = groups.opened["g"]
    assert _deliver(taps, g_sock, [_rtp(7, n) for n in range(5)]) == 5
    taps.sync(2, {"g"})  # joins after five: counts from here
    assert _deliver(taps, g_sock, [_rtp(7, n) for n in range(5, 8)]) == 3
    assert [taps.received(i) for i in range(3)] == [8, 8, 3]
    assert taps.counts() == {"g": 8, "h": 0}
    assert (stats.received, stats.group_received) == (8, 8)
    taps.sync(0, set())
    taps.sync(1, set())
    assert taps.tapped(1) == set()
    assert taps.devices() == [2]
    assert g_sock.fileno() != -1
    assert groups.opened["h"][0].fileno() == -1  # h's last device left
    taps.sync(2, set())
    assert g_sock.fileno() == -1
    assert (taps.counts(), taps.fds) == ({}, {})


def test_a_group_that_cannot_be_joined_taps_nobody(groups: _Groups) -> None:
    taps = GroupTaps(IoStatistics(), groups)
    taps.sync(0, {"refused"})
    assert (taps.tapped(0), taps.devices(), taps.counts()) == (set(), [], {})
    taps.sync(0, {"refused", "g"})
    assert taps.tapped(0) == {"g"}


def test_rtcp_and_other_datagrams_are_counted_not_kept(groups: _Groups) -> None:
    taps = GroupTaps(IoStatistics(), groups)
    taps.sync(0, {"g"})
    (sock,) = groups.opened["g"]
    datagrams = [_rtp(1, 1, payload_type=200), b"\x80", b"not rtp at all", _rtp(2, 9)]
    assert _deliver(taps, sock, datagrams) == 4
    assert set(taps._taps["g"].latest) == {2}


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(2 * TAP_SSRCS)), st.integers(1, 2 * TAP_SSRCS),
       st.lists(st.integers(0, 2 * TAP_SSRCS - 1), max_size=2 * TAP_SSRCS))
def test_the_newest_packet_of_each_recent_stream_is_kept(order: list[int], distinct: int, tail: list[int]) -> None:
    ssrcs = [*order[:distinct], *tail]  # up to twice as many streams as are remembered, in any order
    groups = _Groups()
    try:
        taps = GroupTaps(IoStatistics(), groups)
        taps.sync(0, {"g"})
        (sock,) = groups.opened["g"]
        datagrams = [_rtp(ssrc, n) for n, ssrc in enumerate(ssrcs)]
        assert _deliver(taps, sock, datagrams) == len(datagrams)
        latest = taps._taps["g"].latest
        newest_first: list[int] = []
        for ssrc in reversed(ssrcs):
            if ssrc not in newest_first:
                newest_first.append(ssrc)
        # the eviction forgets the stream with the oldest newest packet: what stays are the most recent streams
        assert set(latest) == set(newest_first[:TAP_SSRCS])
        for ssrc, (number, data, _) in latest.items():
            last = max(n for n, s in enumerate(ssrcs) if s == ssrc)
            assert (number, data) == (last + 1, datagrams[last])
        taps.close()
        assert sock.fileno() == -1
    finally:
        groups.close()
