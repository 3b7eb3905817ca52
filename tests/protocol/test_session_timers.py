"""Session timers (PROTOCOL.md 3.8): keepalive, probing, retry, rekey, expiry, dead."""

from __future__ import annotations

import random
import struct

import pytest

from loa.protocol.datagram import HandshakeInit, Transport, parse
from loa.protocol.errors import LocalProtocolError
from loa.protocol.noise import HandshakeState
from loa.protocol.session import (
    DeviceSession,
    DeviceState,
    Dropped,
    Event,
    Keepalive,
    Message,
    PeerState,
    ServerEndpoint,
    SessionLost,
    SessionStarted,
)

A = ("198.51.100.7", 40000)


def make(seed: int = 3) -> tuple[DeviceSession, ServerEndpoint]:
    rng = random.Random(seed)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes)
    device = DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                           random_bytes=rng.randbytes)
    return device, server


def to_server(device: DeviceSession, server: ServerEndpoint, now: float, *, inits: bool = True) -> list[Event]:
    events: list[Event] = []
    for data in device.datagrams_to_send():
        if inits or data[0] != 1:
            events += server.receive_datagram(data, A, now)
    return events


def to_device(server: ServerEndpoint, device: DeviceSession, now: float) -> list[Event]:
    events: list[Event] = []
    for data, _ in server.datagrams_to_send():
        events += device.receive_datagram(data, now)
    return events


def establish(device: DeviceSession, server: ServerEndpoint, now: float = 0.0) -> None:
    device.connect(now)
    for _ in range(2):
        to_server(device, server, now)
        to_device(server, device, now)
    assert device.state is DeviceState.ESTABLISHED
    assert server.peer_state(device.public_key) is PeerState.ESTABLISHED


def test_keepalive_after_15_idle_seconds_and_the_server_answers() -> None:
    device, server = make()
    establish(device, server)
    assert device.next_timeout() == 15.0
    assert device.handle_timeout(14.9) == []
    assert device.datagrams_to_send() == []
    device.handle_timeout(15.0)
    assert to_server(device, server, 15.0) == [Keepalive(device.public_key)]
    assert to_device(server, device, 15.0) == [Keepalive(None)]
    assert device.next_timeout() == 30.0


def test_a_silent_server_is_probed_every_5_seconds_then_lost() -> None:
    device, server = make()
    establish(device, server)
    sent_at = []
    lost_at = None
    while lost_at is None:
        now = device.next_timeout()
        assert now is not None
        events = device.handle_timeout(now)
        if events:
            assert events == [SessionLost(None)]
            lost_at = now
        sent_at += [now for _ in device.datagrams_to_send()]
    assert sent_at == [15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0]  # the last one is the new init
    assert lost_at == 45.0
    assert device.state is DeviceState.HANDSHAKING
    with pytest.raises(LocalProtocolError):
        device.send(b"x", 45.0)


def test_an_unanswered_confirmation_is_repeated() -> None:
    device, server = make()
    device.connect(0.0)
    to_server(device, server, 0.0)
    to_device(server, device, 0.0)
    device.datagrams_to_send()  # the confirmation is lost
    assert device.next_timeout() == 5.0
    device.handle_timeout(5.0)
    assert to_server(device, server, 5.0)[0] == SessionStarted(device.public_key, device.boot, False)
    to_device(server, device, 5.0)
    assert device.next_timeout() == 20.0


def test_handshake_retries_with_jitter_and_fresh_keys() -> None:
    device, _ = make()
    device.connect(0.0)
    inits = [parse(device.datagrams_to_send()[0])]
    now = 0.0
    for _ in range(20):
        deadline = device.next_timeout()
        assert deadline is not None
        assert 5.0 <= deadline - now <= 5.333
        now = deadline
        device.handle_timeout(now)
        inits.append(parse(device.datagrams_to_send()[0]))
    assert all(isinstance(i, HandshakeInit) for i in inits)
    assert len({i.sender_index for i in inits}) == len(inits)  # type: ignore[union-attr]
    assert len({i.ephemeral for i in inits}) == len(inits)  # type: ignore[union-attr]
    assert device.statistics().inits_sent == 21


def _timestamp(init: bytes, server: ServerEndpoint) -> int:
    hs = HandshakeState("Noise_IK_25519_ChaChaPoly_BLAKE2s", initiator=False, prologue=b"loa/1",
                        s=server._static)
    payload = hs.read_message(init[8:116])
    return int(struct.unpack(">Q", payload[:8])[0])


def test_handshake_timestamps_strictly_increase() -> None:
    rng = random.Random(9)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes)
    device = DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                           random_bytes=rng.randbytes, timestamp_source=lambda _now: 1000)
    device.connect(0.0)
    stamps = [_timestamp(device.datagrams_to_send()[0], server)]
    for _ in range(3):
        device.handle_timeout(device.next_timeout() or 0.0)
        stamps.append(_timestamp(device.datagrams_to_send()[0], server))
    assert stamps == [1000, 1001, 1002, 1003]
    clocked = DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                            random_bytes=rng.randbytes)
    clocked.connect(1_700_000_000.25)
    assert _timestamp(clocked.datagrams_to_send()[0], server) == 1_700_000_000_250_000_000


def exchange_keepalives(device: DeviceSession, server: ServerEndpoint, until: float, *, inits: bool = True) -> float:
    """Run both sides' timers with every datagram delivered at once (inits optionally withheld)."""
    now = 0.0
    while True:
        deadlines = [t for t in (device.next_timeout(), server.next_timeout()) if t is not None]
        now = min(deadlines)
        if now > until:
            return now
        device.handle_timeout(now)
        server.handle_timeout(now)
        to_server(device, server, now, inits=inits)
        to_device(server, device, now)


def test_rekey_after_120_seconds_keeps_both_sessions_working() -> None:
    device, server = make()
    establish(device, server)
    exchange_keepalives(device, server, 119.9)
    assert device.next_timeout() == 120.0
    device.handle_timeout(120.0)
    assert device.state.value == "rekeying"
    server.send(device.public_key, b"old 1", 120.0)
    assert to_device(server, device, 120.0) == [Message(None, b"old 1")]
    assert to_server(device, server, 120.0) == [Keepalive(device.public_key)]  # the init and a keepalive
    assert server.peer_state(device.public_key) is PeerState.REKEYING
    server.send(device.public_key, b"old 2", 120.0)  # still on the old session
    # the response goes first; "old 2" then arrives on what is now the device's previous session
    assert to_device(server, device, 120.0) == [SessionStarted(None, server.boot, False), Message(None, b"old 2")]
    assert device.state is DeviceState.ESTABLISHED
    device.send(b"new", 120.1)
    assert to_server(device, server, 120.1) == [
        SessionStarted(device.public_key, device.boot, False),
        Message(device.public_key, b"new"),
    ]
    server.send(device.public_key, b"new 1", 120.2)
    assert to_device(server, device, 120.2) == [Message(None, b"new 1")]
    assert device.next_timeout() == 135.1


def test_sessions_expire_after_180_seconds_without_a_rekey() -> None:
    device, server = make()
    establish(device, server)
    exchange_keepalives(device, server, 179.9, inits=False)
    assert device.state.value == "rekeying"
    assert device.handle_timeout(180.0) == [SessionLost(None)]
    assert device.state is DeviceState.HANDSHAKING
    assert server.next_timeout() == 180.0
    assert server.handle_timeout(180.0) == [SessionLost(device.public_key)]
    assert server.peer_state(device.public_key) is PeerState.NONE
    assert server.next_timeout() is None
    assert server.statistics().active_devices == 0


def test_expired_sessions_neither_send_nor_receive() -> None:
    device, server = make()
    establish(device, server)
    server.send(device.public_key, b"late", 179.9)
    assert to_device(server, device, 180.5) == [Dropped("ExpiredError")]
    with pytest.raises(LocalProtocolError):
        device.send(b"x", 180.0)
    with pytest.raises(LocalProtocolError):
        server.send(device.public_key, b"x", 180.0)
    device.send(b"y", 179.0)
    (data,) = device.datagrams_to_send()
    assert server.receive_datagram(data, A, 181.0) == [Dropped("ExpiredError")]


def test_an_unconfirmed_session_expires_silently() -> None:
    device, server = make()
    device.connect(0.0)
    to_server(device, server, 0.0)
    assert server.peer_state(device.public_key) is PeerState.RESPONDED
    assert server.next_timeout() == 180.0
    assert server.handle_timeout(180.0) == []
    assert server.peer_state(device.public_key) is PeerState.NONE


def test_transport_counters_count_up_per_direction() -> None:
    device, server = make()
    establish(device, server)
    for i in range(3):
        device.send(b"m", 1.0 + i)
    counters = [parse(d).counter for d in device.datagrams_to_send()]  # type: ignore[union-attr]
    assert counters == [1, 2, 3]  # 0 was the confirmation keepalive
    server.send(device.public_key, b"s", 4.0)
    ((data, _),) = server.datagrams_to_send()
    message = parse(data)
    assert isinstance(message, Transport)
    assert message.counter == 1  # 0 answered the confirmation keepalive


def test_traffic_does_not_grow_the_timer_heap() -> None:
    device, server = make()
    establish(device, server)
    for i in range(500):
        device.send(b"up", 1.0 + i * 0.01)
        to_server(device, server, 1.0 + i * 0.01)
        server.send(device.public_key, b"down", 1.0 + i * 0.01)
        to_device(server, device, 1.0 + i * 0.01)
    assert len(server._heap) <= 3
