"""Session handshake, confirmation, cookies and the handling of bad handshakes (PROTOCOL.md 3.2-3.6)."""

from __future__ import annotations

import random

import pytest

from loa.protocol.cookie import mac, mac1_key
from loa.protocol.datagram import CookieReply, HandshakeInit, Transport, parse
from loa.protocol.errors import LocalProtocolError
from loa.protocol.session import (
    DeviceSession,
    DeviceState,
    Dropped,
    Event,
    Keepalive,
    Message,
    PeerState,
    ServerEndpoint,
    SessionStarted,
    device_id,
)

A = ("198.51.100.7", 40000)
B = ("203.0.113.9", 41000)


def make(
    seed: int = 1, *, enrolled: bool = True, **server_options: object
) -> tuple[DeviceSession, ServerEndpoint, random.Random]:
    rng = random.Random(seed)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: enrolled,
                            random_bytes=rng.randbytes, **server_options)  # type: ignore[arg-type]
    device = DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                           random_bytes=rng.randbytes)
    return device, server, rng


def to_server(device: DeviceSession, server: ServerEndpoint, now: float, address: tuple[str, int] = A) -> list[Event]:
    events: list[Event] = []
    for data in device.datagrams_to_send():
        events += server.receive_datagram(data, address, now)
    return events


def to_device(server: ServerEndpoint, device: DeviceSession, now: float) -> list[Event]:
    events: list[Event] = []
    for data, _ in server.datagrams_to_send():
        events += device.receive_datagram(data, now)
    return events


def establish(device: DeviceSession, server: ServerEndpoint, now: float = 0.0) -> None:
    device.connect(now)
    to_server(device, server, now)
    to_device(server, device, now)
    to_server(device, server, now)
    to_device(server, device, now)
    assert device.state is DeviceState.ESTABLISHED
    assert server.peer_state(device.public_key) is PeerState.ESTABLISHED


def test_devices_are_found_by_device_id_before_and_after_the_first_such_look_up() -> None:
    """The index by device id is made at the first look-up by id; devices that come and go afterwards are kept in
    it."""
    rng = random.Random(9)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes)
    devices = [DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                             random_bytes=rng.randbytes) for _ in range(3)]
    establish(devices[0], server)
    assert server.peer_state(device_id(devices[1].public_key)) is PeerState.NONE  # the index is made here
    assert server.peer_state(device_id(devices[0].public_key)) is PeerState.ESTABLISHED
    establish(devices[1], server, 1.0)
    assert server.has_session(device_id(devices[1].public_key))
    assert server.address_of(device_id(devices[1].public_key)) == A
    server.forget(device_id(devices[0].public_key))
    assert server.peer_state(device_id(devices[0].public_key)) is PeerState.NONE
    assert server.peer_state(devices[0].public_key) is PeerState.NONE
    assert server.peer_state("not a device id") is PeerState.NONE
    establish(devices[2], server, 2.0)
    assert [server.has_session(device_id(d.public_key)) for d in devices] == [False, True, True]


def test_join_sequence_sizes_and_events() -> None:
    device, server, _ = make()
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    assert len(init) == 148
    assert init[:4] == b"\x01\x01\x00\x00"
    assert server.receive_datagram(init, A, 0.01) == []
    ((response, address),) = server.datagrams_to_send()
    assert (len(response), address) == (96, A)
    assert not server.has_session(device.public_key)
    assert server.peer_state(device.public_key) is PeerState.RESPONDED
    assert device.receive_datagram(response, 0.02) == [SessionStarted(None, server.boot, False)]
    (confirm,) = device.datagrams_to_send()
    assert len(confirm) == 32
    assert server.receive_datagram(confirm, A, 0.03) == [
        SessionStarted(device.public_key, device.boot, False),
        Keepalive(device.public_key),
    ]
    assert server.has_session(device_id(device.public_key))
    ((answer, address),) = server.datagrams_to_send()
    assert (len(answer), address) == (32, A)
    assert device.receive_datagram(answer, 0.04) == [Keepalive(None)]
    stats = server.statistics()
    assert (stats.inits, stats.responses_sent, stats.sessions_started, stats.active_devices) == (1, 1, 1, 1)
    assert dict(stats.drops) == {}


def test_a_message_sent_at_once_is_the_confirmation() -> None:
    device, server, _ = make()
    device.connect(0.0)
    to_server(device, server, 0.0)
    assert to_device(server, device, 0.0)[0] == SessionStarted(None, server.boot, False)
    device.send(b"hello", 0.0)
    (hello,) = device.datagrams_to_send()
    assert len(hello) == 32 + 5
    assert server.receive_datagram(hello, A, 0.0) == [
        SessionStarted(device.public_key, device.boot, False),
        Message(device.public_key, b"hello"),
    ]
    assert server.datagrams_to_send() == []
    server.send(device.public_key, b"config", 0.1)
    assert to_device(server, device, 0.1) == [Message(None, b"config")]


def test_sends_without_a_session_are_local_errors() -> None:
    device, server, _ = make()
    with pytest.raises(LocalProtocolError):
        device.send(b"x", 0.0)
    with pytest.raises(LocalProtocolError):
        server.send(device.public_key, b"x", 0.0)
    with pytest.raises(LocalProtocolError):
        server.send("0000000000000000", b"x", 0.0)
    device.connect(0.0)
    with pytest.raises(LocalProtocolError):
        device.connect(0.0)
    with pytest.raises(LocalProtocolError):
        device.send(b"x", 0.0)
    to_server(device, server, 0.0)
    with pytest.raises(LocalProtocolError):
        server.send(device.public_key, b"x", 0.0)  # responded, not confirmed
    to_device(server, device, 0.0)
    with pytest.raises(LocalProtocolError):
        device.send(bytes(1169), 0.0)
    device.send(bytes(1168), 0.0)
    assert len(device.datagrams_to_send()[-1]) == 1200


def test_unknown_device_is_dropped_and_nothing_is_sent() -> None:
    device, server, _ = make(enrolled=False)
    device.connect(0.0)
    assert to_server(device, server, 0.0) == [Dropped("UnknownKeyError")]
    assert server.datagrams_to_send() == []
    assert server.statistics().drops == {"UnknownKeyError": 1}
    assert server.peer_state(device.public_key) is PeerState.NONE


def test_replayed_init_is_dropped_from_any_address() -> None:
    device, server, _ = make()
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    assert server.receive_datagram(init, A, 0.0) == []
    server.datagrams_to_send()
    assert server.receive_datagram(init, A, 1.0) == [Dropped("ReplayError")]
    assert server.receive_datagram(init, B, 2.0) == [Dropped("ReplayError")]
    assert server.datagrams_to_send() == []
    assert server.handshake_timestamps() == {device.public_key: 0}


def test_stored_timestamps_survive_a_restart() -> None:
    device, server, rng = make()
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    server.receive_datagram(init, A, 0.0)
    restarted = ServerEndpoint(static_private=server._static, is_enrolled=lambda _pub: True,
                               random_bytes=rng.randbytes, handshake_timestamps=server.handshake_timestamps())
    assert restarted.receive_datagram(init, A, 5.0) == [Dropped("ReplayError")]
    assert restarted.datagrams_to_send() == []


def test_bad_mac1_and_forged_inits_get_no_answer() -> None:
    device, server, _ = make()
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    bad_mac1 = init[:120] + bytes([init[120] ^ 1]) + init[121:]
    assert server.receive_datagram(bad_mac1, A, 0.0) == [Dropped("BadMacError")]
    forged = bytearray(init)
    forged[50] ^= 1  # inside encrypted_static
    forged[116:132] = mac(mac1_key(server.public_key), bytes(forged[:116]))
    assert server.receive_datagram(bytes(forged), A, 0.0) == [Dropped("AuthError")]
    low_order = bytearray(init)
    low_order[8:40] = bytes(32)
    low_order[116:132] = mac(mac1_key(server.public_key), bytes(low_order[:116]))
    assert server.receive_datagram(bytes(low_order), A, 0.0) == [Dropped("AuthError")]
    assert server.datagrams_to_send() == []
    assert server.statistics().drops == {"BadMacError": 1, "AuthError": 2}


def test_wrong_direction_types_are_unknown() -> None:
    device, server, _ = make()
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    assert device.receive_datagram(init, 0.0) == [Dropped("UnknownTypeError")]
    server.receive_datagram(init, A, 0.0)
    ((response, _),) = server.datagrams_to_send()
    assert server.receive_datagram(response, A, 0.0) == [Dropped("UnknownTypeError")]
    assert server.receive_datagram(CookieReply(1, bytes(12), bytes(32)).to_bytes(), A, 0.0) == [
        Dropped("UnknownTypeError")
    ]


def test_responses_for_no_pending_init_are_dropped() -> None:
    device, server, _ = make()
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    server.receive_datagram(init, A, 0.0)
    ((response, _),) = server.datagrams_to_send()
    tampered = response[:70] + bytes([response[70] ^ 1]) + response[71:]
    assert device.receive_datagram(tampered, 0.0) == [Dropped("BadMacError")]
    corrupted = bytearray(response)
    corrupted[50] ^= 1
    corrupted[64:80] = mac(mac1_key(device.public_key), bytes(corrupted[:64]))
    assert device.receive_datagram(bytes(corrupted), 0.0) == [Dropped("AuthError")]
    assert device.state is DeviceState.HANDSHAKING
    assert device.receive_datagram(response, 0.0)[0] == SessionStarted(None, server.boot, False)
    assert device.receive_datagram(response, 0.0) == [Dropped("UnknownKeyError")]


def test_cookie_path_under_load() -> None:
    device, server, _ = make()
    server.set_under_load(True)
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    assert parse(init).mac2 == bytes(16)  # type: ignore[union-attr]
    assert server.receive_datagram(init, A, 0.0) == []
    ((reply, address),) = server.datagrams_to_send()
    assert (len(reply), address) == (52, A)
    assert server.statistics().responses_sent == 0
    assert device.receive_datagram(reply, 0.01) == []
    assert device.statistics().cookies_accepted == 1
    (init2,) = device.datagrams_to_send()  # resent at once, with mac2 (PROTOCOL.md 3.4.1)
    assert parse(init2).mac2 != bytes(16)  # type: ignore[union-attr]
    # the same reply again: its init is no longer pending
    assert device.receive_datagram(reply, 0.01) == [Dropped("UnknownKeyError")]
    assert device.datagrams_to_send() == []
    retry_at = device.next_timeout()
    assert retry_at is not None
    assert 5.01 <= retry_at <= 5.343  # an init with mac2 is retried after REKEY_TIMEOUT
    # from another address the cookie is not valid: another cookie reply, no response
    assert server.receive_datagram(init2, B, 0.02) == []
    ((_, address),) = server.datagrams_to_send()
    assert address == B
    device.handle_timeout(retry_at)
    now = 11.0
    assert to_server(device, server, now) == []
    ((response, _),) = server.datagrams_to_send()
    assert len(response) == 96
    assert device.receive_datagram(response, now)[0] == SessionStarted(None, server.boot, False)
    assert server.statistics().cookie_replies_sent == 2


def test_cookie_expires_at_the_device() -> None:
    device, server, _ = make()
    server.set_under_load(True)
    device.connect(0.0)
    to_server(device, server, 0.0)
    to_device(server, device, 0.0)
    (resent,) = device.datagrams_to_send()
    assert parse(resent).mac2 != bytes(16)  # type: ignore[union-attr]
    server.set_under_load(False)
    now = 0.0
    while now < 125.0:
        now = device.next_timeout() or 0.0
        device.handle_timeout(now)
        (init,) = device.datagrams_to_send()
        assert (parse(init).mac2 != bytes(16)) == (now < 120.0)  # type: ignore[union-attr]


def test_bad_cookie_replies_are_ignored() -> None:
    device, server, _ = make()
    server.set_under_load(True)
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    server.receive_datagram(init, A, 0.0)
    ((reply, _),) = server.datagrams_to_send()
    parsed = parse(reply)
    assert isinstance(parsed, CookieReply)
    wrong_index = CookieReply(parsed.receiver_index ^ 1, parsed.nonce, parsed.encrypted_cookie).to_bytes()
    assert device.receive_datagram(wrong_index, 0.0) == [Dropped("UnknownKeyError")]
    tampered = CookieReply(parsed.receiver_index, bytes(12), parsed.encrypted_cookie).to_bytes()
    assert device.receive_datagram(tampered, 0.0) == [Dropped("AuthError")]
    assert device.statistics().cookies_accepted == 0


def test_load_is_detected_from_the_init_rate() -> None:
    rng = random.Random(5)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes, cookie_threshold=3)
    devices = [DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                             random_bytes=rng.randbytes) for _ in range(6)]
    sizes = []
    for i, device in enumerate(devices[:4]):
        device.connect(0.1 * i)
        to_server(device, server, 0.1 * i, ("10.0.0.1", 1000 + i))
        sizes += [len(d) for d, _ in server.datagrams_to_send()]
    assert sizes == [96, 96, 96, 52]
    assert server.is_under_load(0.35)
    assert not server.is_under_load(1.35)
    devices[4].connect(1.35)
    to_server(devices[4], server, 1.35, ("10.0.0.1", 2000))
    assert [len(d) for d, _ in server.datagrams_to_send()] == [96]
    server.set_under_load(False)
    assert not server.is_under_load(1.36)


def test_transport_errors() -> None:
    device, server, _ = make()
    establish(device, server)
    device.send(b"ping", 1.0)
    (data,) = device.datagrams_to_send()
    message = parse(data)
    assert isinstance(message, Transport)
    assert server.receive_datagram(data[:-1] + bytes([data[-1] ^ 1]), A, 1.0) == [Dropped("AuthError")]
    bumped = Transport(message.receiver_index, message.counter + 1, message.ciphertext).to_bytes()
    assert server.receive_datagram(bumped, A, 1.0) == [Dropped("AuthError")]
    other = Transport(message.receiver_index ^ 0xFFFF, message.counter, message.ciphertext).to_bytes()
    assert server.receive_datagram(other, A, 1.0) == [Dropped("UnknownKeyError")]
    assert server.receive_datagram(data, A, 1.0) == [Message(device.public_key, b"ping")]
    assert server.receive_datagram(data, A, 1.0) == [Dropped("ReplayError")]
    assert server.statistics().drops == {"AuthError": 2, "UnknownKeyError": 1, "ReplayError": 1}


def test_restarted_device_is_reported() -> None:
    device, server, rng = make()
    establish(device, server)
    reborn = DeviceSession(static_private=device._static, server_public=server.public_key,
                           random_bytes=rng.randbytes)
    assert reborn.boot != device.boot
    reborn.connect(2.0)
    to_server(reborn, server, 2.0)
    assert server.peer_state(reborn.public_key) is PeerState.REKEYING
    to_device(server, reborn, 2.0)
    events = to_server(reborn, server, 2.0)
    assert events[0] == SessionStarted(reborn.public_key, reborn.boot, True)


def test_forget() -> None:
    device, server, _ = make()
    establish(device, server)
    server.forget(device_id(device.public_key))
    server.forget(device.public_key)
    assert not server.has_session(device.public_key)
    assert server.address_of(device.public_key) is None
    device.send(b"x", 1.0)
    assert to_server(device, server, 1.0) == [Dropped("UnknownKeyError")]


def test_close_forgets_the_session() -> None:
    device, server, _ = make()
    establish(device, server)
    device.close()
    device.close()
    assert device.state is DeviceState.IDLE
    assert device.next_timeout() is None
    server.send(device.public_key, b"late", 1.0)
    assert to_device(server, device, 1.0) == [Dropped("UnknownKeyError")]
    device.connect(2.0)
    assert len(device.datagrams_to_send()) == 1


def test_init_layout_matches_the_spec() -> None:
    device, server, _ = make()
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    parsed = parse(init)
    assert isinstance(parsed, HandshakeInit)
    assert parsed.mac1 == mac(mac1_key(server.public_key), init[:116])
    assert parsed.mac2 == bytes(16)
