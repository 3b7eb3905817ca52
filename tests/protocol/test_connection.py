"""Session + reliable control channel over the fake network (PROTOCOL.md sections 3 and 4.3).

Two (and more) endpoints complete the handshake and deliver every reliable control message exactly once at 30 %
loss in both directions with duplication and reordering, under a virtual clock.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from loa.protocol.connection import (
    Connected,
    ConnectionEvent,
    DeviceConnection,
    Received,
    ServerConnection,
)
from loa.protocol.control import Reboot, State, TimeReq, Volume
from loa.protocol.errors import LocalProtocolError
from loa.protocol.session import REJECT_AFTER_TIME
from loa.protocol.sim import FakeNetwork

Address = tuple[str, int]
SERVER: Address = ("192.0.2.1", 4433)


class DeviceNodeC:
    def __init__(self, conn: DeviceConnection, server: Address) -> None:
        self.conn, self.server = conn, server
        self.events: list[ConnectionEvent] = []

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self.events += self.conn.receive_datagram(data, now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return [(d, self.server) for d in self.conn.datagrams_to_send()]

    def next_timeout(self) -> float | None:
        return self.conn.next_timeout()

    def handle_timeout(self, now: float) -> None:
        self.events += self.conn.handle_timeout(now)


class ServerNodeC:
    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.events: list[ConnectionEvent] = []

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self.events += self.conn.receive_datagram(data, src, now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return self.conn.datagrams_to_send()

    def next_timeout(self) -> float | None:
        return self.conn.next_timeout()

    def handle_timeout(self, now: float) -> None:
        self.events += self.conn.handle_timeout(now)


class World:
    def __init__(self, seed: int, devices: int, **conditions: object) -> None:
        self.rng = random.Random(seed)
        self.net = FakeNetwork(seed, **conditions)  # type: ignore[arg-type]
        self.server_static = self.rng.randbytes(32)
        self.server = self._new_server()
        self.devices: list[DeviceNodeC] = []
        for i in range(devices):
            conn = DeviceConnection(static_private=self.rng.randbytes(32),
                                    server_public=self.server.conn.endpoint.public_key,
                                    random_bytes=self.rng.randbytes, rng=self.rng.random)
            node = DeviceNodeC(conn, SERVER)
            self.net.attach(("198.51.100.1", 40000 + i), node)
            self.devices.append(node)

    def _new_server(self) -> ServerNodeC:
        conn = ServerConnection(static_private=self.server_static, is_enrolled=lambda _pub: True,
                                random_bytes=self.rng.randbytes, rng=self.rng.random)
        node = ServerNodeC(conn)
        self.net.attach(SERVER, node)
        return node

    def restart_server(self) -> None:
        self.net.detach(SERVER)
        self.server = self._new_server()

    def pub(self, node: DeviceNodeC) -> bytes:
        return node.conn.session.public_key


def received(events: list[ConnectionEvent], kind: type) -> list:
    return [e for e in events if isinstance(e, Received) and isinstance(e.message, kind)]


@pytest.mark.parametrize("seed", range(4))
def test_every_reliable_message_arrives_once_at_30_percent_loss(seed: int) -> None:
    world = World(seed, devices=3, loss=0.3, duplicate=0.1, reorder=0.1, delay=(0.01, 0.08))
    n = 200
    for node in world.devices:
        node.conn.connect(world.net.now)
        for i in range(n):  # queued before any session exists: they wait and go out with their ids
            node.conn.send(State(bid=i, src="ip", since=i), world.net.now)
        for i in range(n):
            world.server.conn.send(world.pub(node), Reboot(delay_ms=i), world.net.now)

    def done() -> bool:
        return (len(received(world.server.events, State)) >= n * len(world.devices)
                and all(len(received(d.events, Reboot)) >= n for d in world.devices))

    assert world.net.run_until(done, limit=600.0), world.net.statistics()
    world.net.run_for(30.0)  # let late duplicates arrive: they must still not be delivered twice

    by_device = Counter((e.device, e.message.bid) for e in received(world.server.events, State))
    assert set(by_device.values()) == {1}
    assert len(by_device) == n * len(world.devices)
    for node in world.devices:
        delays = [e.message.delay_ms for e in received(node.events, Reboot)]
        assert sorted(delays) == list(range(n))
    stats = world.net.statistics()
    assert stats.lost > 0
    assert stats.duplicated > 0
    # The server's totals (its /metrics): each Reboot sent once, retransmitted where an ack was lost, and the
    # devices' States that came twice (lost acks, network duplicates) counted, not delivered. A forgotten device's
    # counts stay in them.
    totals = world.server.conn.reliable_totals()
    assert totals.sent == n * len(world.devices)
    assert totals.retransmitted > 0
    assert totals.duplicates > 0
    world.server.conn.forget(world.pub(world.devices[0]))
    assert world.server.conn.reliable_totals() == totals


def test_queued_messages_survive_a_server_restart() -> None:
    world = World(7, devices=1, loss=0.1, delay=(0.01, 0.03))
    (node,) = world.devices
    node.conn.connect(world.net.now)
    assert world.net.run_until(lambda: world.server.conn.is_connected(world.pub(node)), 30.0)
    world.restart_server()
    for i in range(20):
        node.conn.send(State(bid=i, src="fm", since=i), world.net.now)
    # the new server knows nothing: the device notices the silence, handshakes again, resends every message
    assert world.net.run_until(lambda: len(received(world.server.events, State)) >= 20, 300.0)
    assert sorted(e.message.bid for e in received(world.server.events, State)) == list(range(20))
    restarts = [e for e in node.events if isinstance(e, Connected) and e.peer_restarted]
    assert len(restarts) == 1


def test_a_restarted_device_is_not_mistaken_for_duplicates() -> None:
    world = World(3, devices=1, delay=(0.01, 0.02))
    static = world.rng.randbytes(32)
    server_pub = world.server.conn.endpoint.public_key

    def boot_device() -> DeviceConnection:
        conn = DeviceConnection(static_private=static, server_public=server_pub, random_bytes=world.rng.randbytes)
        world.devices[0].conn = conn
        conn.connect(world.net.now)
        return conn

    first = boot_device()
    first.send(State(bid=1, src="ip", since=0), world.net.now)  # id 1 of the first boot
    assert world.net.run_until(lambda: len(received(world.server.events, State)) == 1, 30.0)
    second = boot_device()  # same key, new boot: its ids start again at 1
    second.send(State(bid=2, src="ip", since=1), world.net.now)
    assert world.net.run_until(lambda: len(received(world.server.events, State)) == 2, 60.0)
    assert [e.message.bid for e in received(world.server.events, State)] == [1, 2]
    assert any(isinstance(e, Connected) and e.peer_restarted for e in world.server.events)


def test_a_deleted_device_comes_back_afresh_and_a_closed_session_keeps_its_boot() -> None:
    """``ServerConnection.forget`` (the device was deleted) forgets its boot with its channel: back with another
    boot, its session is a first one. The endpoint's ``forget`` alone (its sessions closed, as after ``bye``)
    keeps the boot: a new boot is then a restart."""
    world = World(5, devices=1, delay=(0.01, 0.02))
    static = world.rng.randbytes(32)
    server = world.server.conn

    def connected_after_a_new_boot() -> Connected:
        conn = DeviceConnection(static_private=static, server_public=server.endpoint.public_key,
                                random_bytes=world.rng.randbytes)
        world.devices[0].conn = conn
        before = len(world.server.events)
        conn.connect(world.net.now)
        assert world.net.run_until(lambda: any(isinstance(e, Connected) for e in world.server.events[before:]), 30.0)
        (event,) = [e for e in world.server.events[before:] if isinstance(e, Connected)]
        return event

    assert not connected_after_a_new_boot().peer_restarted
    server.forget(conn_pub := world.pub(world.devices[0]))
    assert not connected_after_a_new_boot().peer_restarted
    server.endpoint.forget(conn_pub)
    assert connected_after_a_new_boot().peer_restarted


def test_messages_of_the_wrong_direction_are_acknowledged_not_delivered() -> None:
    world = World(4, devices=1, delay=(0.01, 0.02))
    (node,) = world.devices
    node.conn.connect(world.net.now)
    node.conn.send(Volume(level=10), world.net.now)  # a server-to-device command, sent the wrong way
    node.conn.send(State(bid=1, src="ip", since=0), world.net.now)
    assert world.net.run_until(lambda: len(received(world.server.events, State)) == 1, 30.0)
    assert world.net.run_until(lambda: node.conn.channel.statistics().in_flight == 0, 30.0)
    assert received(world.server.events, Volume) == []


def test_unreliable_messages_need_a_session() -> None:
    world = World(5, devices=1)
    (node,) = world.devices
    with pytest.raises(LocalProtocolError):
        node.conn.send(TimeReq(t1=1), world.net.now)
    node.conn.connect(world.net.now)
    assert world.net.run_until(lambda: node.conn.connected, 10.0)
    assert node.conn.send(TimeReq(t1=1), world.net.now) is None
    assert world.net.run_until(lambda: len(received(world.server.events, TimeReq)) == 1, 10.0)


def test_garbage_is_counted_not_raised() -> None:
    world = World(9, devices=1)
    rng = random.Random(1)
    for _ in range(500):
        data = rng.randbytes(rng.randrange(0, 200))
        assert world.server.conn.receive_datagram(data, ("203.0.113.5", 1), 0.0) == []
    assert sum(world.server.conn.statistics().drops.values()) == 500


def test_a_reliable_message_sent_as_the_session_expires_is_not_lost_and_nothing_raises() -> None:
    """A device whose host fell behind can be handed a message after its session's REJECT_AFTER_TIME passed
    and before its timer ran: the session refuses to seal, the connection does not raise, and the message goes
    out on the next session."""
    world = World(3, devices=1, delay=(0.01, 0.03))
    (node,) = world.devices
    node.conn.connect(world.net.now)
    assert world.net.run_until(lambda: world.server.conn.is_connected(world.pub(node)), 30.0)
    late = world.net.now + REJECT_AFTER_TIME + 1.0  # the timer that would have rekeyed has not run
    node.conn.send(State(bid=7, src="ip", since=1), late)
    world.net.clock.jump_to(late)
    assert world.net.run_until(lambda: len(received(world.server.events, State)) >= 1, 120.0)
    assert [e.message.bid for e in received(world.server.events, State)] == [7]
