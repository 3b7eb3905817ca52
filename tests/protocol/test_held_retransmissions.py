"""Retransmissions after input (``ServerConnection.set_input_horizon``): a server behind on its socket holds back
a retransmission whose acknowledgement may be in what it has not read yet, for at most ``HOLD_MAX_S``; its
acknowledgements and first transmissions are never held, and its timers never fall due in the past."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from loa.protocol.connection import HOLD_MAX_S, DeviceConnection, Received, ServerConnection
from loa.protocol.control import State, Volume
from loa.protocol.reliable import ACK_DELAY, RTO_INITIAL

DEVICE = ("198.51.100.7", 40000)


@dataclass
class Pair:
    """A server and one device with a confirmed session; datagrams move only when the test moves them."""

    server: ServerConnection
    device: DeviceConnection
    to_server: list[tuple[float, bytes]] = field(default_factory=list)  # (arrival, datagram), not read yet
    to_device: list[bytes] = field(default_factory=list)
    horizon: float | None = None
    delivered: list[int] = field(default_factory=list)  # Volume levels the device got

    @property
    def pub(self) -> bytes:
        return self.device.session.public_key

    def server_timers(self, now: float) -> int:
        """Run the server's timers at ``now``; the datagrams it sent (kept for the device)."""
        self.server.handle_timeout(now)
        return self.collect()

    def collect(self) -> int:
        out = [data for data, _address in self.server.datagrams_to_send()]
        self.to_device += out
        return len(out)

    def device_step(self, now: float) -> None:
        """The device reads what the server sent and runs its timers; what it sends waits for the server."""
        events = []
        for data in self.to_device:
            events += self.device.receive_datagram(data, now)
        self.to_device = []
        events += self.device.handle_timeout(now)
        self.delivered += [e.message.level for e in events if isinstance(e, Received) and isinstance(e.message, Volume)]
        self.to_server += [(now, data) for data in self.device.datagrams_to_send()]

    def server_reads(self, now: float, count: int | None = None) -> None:
        """The server reads ``count`` of the waiting datagrams (all by default) at ``now`` and says how far its
        input is read, as the streamer's receive loop does."""
        count = len(self.to_server) if count is None else count
        read, self.to_server = self.to_server[:count], self.to_server[count:]
        for _arrival, data in read:
            self.server.receive_datagram(data, DEVICE, now)
        if not self.to_server:
            self.horizon = None
        elif read:
            self.horizon = read[-1][0]
        self.server.set_input_horizon(self.horizon)
        self.collect()


def _pair(seed: int = 1) -> tuple[Pair, float]:
    rng = random.Random(seed)
    server = ServerConnection(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                              random_bytes=rng.randbytes)
    device = DeviceConnection(static_private=rng.randbytes(32), server_public=server.endpoint.public_key,
                              random_bytes=rng.randbytes, rng=rng.random)
    pair = Pair(server, device)
    device.connect(0.0)
    device.send(State(bid=1, src="ip", since=0), 0.0)  # its first transport message confirms the session
    now = 0.0
    for _ in range(40):
        now += 0.05
        pair.device_step(now)
        pair.server_reads(now)
        pair.server_timers(now)
    assert device.connected
    assert server.is_connected(pair.pub)
    assert device.channel.statistics().in_flight == 0
    assert server.channel(pair.pub).statistics().in_flight == 0
    return pair, now


def test_a_retransmission_waits_for_the_unread_acknowledgement() -> None:
    pair, now = _pair()
    server = pair.server
    server.send(pair.pub, Volume(level=5), now)
    assert pair.collect() == 1  # sent at once
    pair.device_step(now + 0.01)
    pair.device_step(now + 0.01 + ACK_DELAY)  # the device acknowledges; the server has not read it
    assert len(pair.to_server) == 1
    pair.server.set_input_horizon(now)  # read up to before the acknowledgement arrived, more waiting
    late = now + RTO_INITIAL * 3  # past the message's deadline
    assert pair.server_timers(late) == 0
    assert server.next_timeout() > late  # held: not a deadline in the past (the timer loop would spin)
    assert server.held == 1
    pair.server_reads(late)  # the acknowledgement is read: nothing is ever retransmitted
    for t in range(1, 30):
        assert pair.server_timers(late + t) == 0
    stats = server.channel(pair.pub).statistics()
    assert (stats.in_flight, stats.retransmitted) == (0, 0)
    assert pair.delivered == [5]


def test_a_retransmission_is_held_for_hold_max_at_most() -> None:
    pair, now = _pair(2)
    server = pair.server
    server.send(pair.pub, Volume(level=6), now)
    pair.collect()  # lost: the device never gets it
    pair.to_device = []
    pair.to_server.append((now + 0.001, b"\x09 unread"))  # something waits unread, and keeps waiting
    pair.server.set_input_horizon(now)
    deadline = now + RTO_INITIAL
    assert pair.server_timers(deadline) == 0
    assert server.next_timeout() == deadline + HOLD_MAX_S
    assert pair.server_timers(deadline + HOLD_MAX_S - 0.001) == 0
    assert pair.server_timers(deadline + HOLD_MAX_S) == 1  # held no longer: it goes
    assert server.channel(pair.pub).statistics().retransmitted == 1
    pair.device_step(deadline + HOLD_MAX_S + 0.01)
    assert pair.delivered == [6]


def test_acknowledgements_are_not_held() -> None:
    pair, now = _pair(3)
    pair.device.send(State(bid=2, src="ip", since=1), now)
    pair.device_step(now)
    pair.to_server.append((now + 0.001, b"\x09 unread"))
    pair.server_reads(now + 0.002, count=1)  # the State is read, more waits
    assert pair.horizon == now
    assert pair.server_timers(now + 0.002 + ACK_DELAY) == 1  # the ack goes at ACK_DELAY all the same


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16),
       steps=st.lists(st.tuples(st.floats(0.0, 0.7), st.booleans(), st.integers(0, 3), st.booleans()),
                      min_size=1, max_size=60))
def test_held_retransmissions_keep_every_promise(seed: int, steps: list[tuple[float, bool, int, bool]]) -> None:
    """Whatever the server reads when: after its timers ran, no deadline is in the past; every message is
    delivered once; once the input is read, nothing stays in flight."""
    pair, now = _pair(seed % 7)
    server = pair.server
    level = 0
    for dt, send, reads, device_runs in steps:
        now += dt
        if send:
            server.send(pair.pub, Volume(level=level % 101), now)
            level += 1
            pair.collect()
        if device_runs:
            pair.device_step(now)
        pair.server_reads(now, count=min(reads, len(pair.to_server)))
        pair.server_timers(now)
        due = server.next_timeout()
        assert due is None or due > now
    for _ in range(200):  # everything read from here on
        now += 0.1
        pair.device_step(now)
        pair.server_reads(now)
        pair.server_timers(now)
    assert sorted(pair.delivered) == sorted(k % 101 for k in range(level))
    assert server.channel(pair.pub).statistics().in_flight == 0
