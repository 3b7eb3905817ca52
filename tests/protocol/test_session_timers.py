"""Session timers (PROTOCOL.md 3.8): keepalive, probing, retry, rekey, expiry, dead."""

from __future__ import annotations

import itertools
import random
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from loa.protocol._session_core import SessionKeys
from loa.protocol.datagram import CookieReply, HandshakeInit, Transport, parse
from loa.protocol.errors import LocalProtocolError
from loa.protocol.noise import HandshakeState
from loa.protocol.session import (
    JOIN_JITTER,
    JOIN_RETRY,
    REJECT_AFTER_TIME,
    REKEY_JITTER,
    REKEY_TIMEOUT,
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
B = ("203.0.113.9", 41000)
JOINING = (JOIN_RETRY, JOIN_RETRY + JOIN_JITTER)  # 2.0-2.5 s: no current session, no cookie
REKEYING = (REKEY_TIMEOUT, REKEY_TIMEOUT + REKEY_JITTER)  # 5.0-5.333 s: a current session, or a cookie


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
    assert (device.ended_dead, device.ended_expired) == (1, 0)  # counted by cause
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


def is_init(data: bytes) -> bool:
    return data[0] == 1


def init_times(device: DeviceSession, until: float, *, now: float = 0.0) -> list[float]:
    """Fire the device's timers up to ``until`` with nothing answered; the instants at which it sent an init."""
    sent = []
    while (deadline := device.next_timeout()) is not None and deadline <= until:
        now = max(now, deadline)
        device.handle_timeout(now)
        sent += [now for data in device.datagrams_to_send() if is_init(data)]
    return sent


def rekey_init_times(device: DeviceSession, server: ServerEndpoint, until: float) -> list[float]:
    """Run both sides' timers up to ``until``, every datagram delivered but the device's inits; the instants at
    which the device sent an init."""
    sent = []
    while (now := min(t for t in (device.next_timeout(), server.next_timeout()) if t is not None)) <= until:
        device.handle_timeout(now)
        server.handle_timeout(now)
        for data in device.datagrams_to_send():
            if is_init(data):
                sent.append(now)
            else:
                server.receive_datagram(data, A, now)
        to_device(server, device, now)
    return sent


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in itertools.pairwise(times)]


def within(values: list[float], bounds: tuple[float, float]) -> bool:
    return all(bounds[0] <= v <= bounds[1] for v in values)


def test_handshake_retries_with_jitter_and_fresh_keys() -> None:
    device, _ = make()
    device.connect(0.0)
    inits = [parse(device.datagrams_to_send()[0])]
    now = 0.0
    for _ in range(20):
        deadline = device.next_timeout()
        assert deadline is not None
        assert JOINING[0] <= deadline - now <= JOINING[1]  # no session yet: the joining pace
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
    assert (device.ended_dead, device.ended_expired) == (0, 0)
    assert device.handle_timeout(180.0) == [SessionLost(None)]
    assert (device.ended_dead, device.ended_expired) == (0, 1)
    assert device.state is DeviceState.HANDSHAKING
    assert server.next_timeout() == 180.0
    assert server.handle_timeout(180.0) == [SessionLost(device.public_key)]
    assert server.peer_state(device.public_key) is PeerState.NONE
    assert server.next_timeout() is None
    assert server.statistics().active_devices == 0


@settings(max_examples=300, deadline=None)
@given(created=st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False))
@example(created=848.026)  # 848.026 + 180 - 848.026 < 180 in floating point
def test_a_session_is_expired_at_the_very_deadline_its_timer_is_given(created: float) -> None:
    """A timer handed ``created + REJECT_AFTER_TIME`` may fire with exactly that time: the session is expired
    then, whatever the rounding (else the server's timer loop would take the same deadline again for ever)."""
    keys = SessionKeys(1, 2, None, None, created)  # type: ignore[arg-type]  # the ciphers play no part here
    assert keys.expired(created + REJECT_AFTER_TIME)
    device, server = make()
    establish(device, server, created)
    deadline = server.next_timeout()
    assert deadline == created + REJECT_AFTER_TIME
    assert server.handle_timeout(deadline) == [SessionLost(device.public_key)]
    assert server.next_timeout() is None
    assert device.next_timeout() is not None
    assert device.handle_timeout(deadline)[:1] == [SessionLost(None)]


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


def test_the_join_jitter_spans_its_whole_range() -> None:
    device, _ = make(11)
    device.connect(0.0)
    device.datagrams_to_send()
    spread = gaps([0.0, *init_times(device, 2000.0)])
    assert len(spread) > 700
    assert within(spread, JOINING)
    assert min(spread) < JOIN_RETRY + 0.05
    assert max(spread) > JOIN_RETRY + JOIN_JITTER - 0.05
    assert all(round(g * 1000) == round(g * 1000, 6) for g in spread)  # whole milliseconds


def test_a_rekey_is_retried_after_rekey_timeout() -> None:
    device, server = make()
    establish(device, server)
    sent = rekey_init_times(device, server, 179.9)
    assert device.state is DeviceState.REKEYING
    assert sent[0] == 120.0
    assert len(sent) >= 10
    assert within(gaps(sent), REKEYING)


def test_after_session_lost_the_device_retries_at_the_joining_pace() -> None:
    device, server = make()
    establish(device, server)
    sent = init_times(device, 60.0)  # the server fell silent: probed, declared dead at 45 s, then joining
    assert device.state is DeviceState.HANDSHAKING
    assert sent[0] == 45.0
    assert len(sent) >= 7
    assert within(gaps(sent), JOINING)


def test_a_rekey_init_older_than_the_joining_interval_is_retried_at_once_when_the_session_expires() -> None:
    device, server = make()
    establish(device, server)
    sent = rekey_init_times(device, server, 179.9)
    assert device.state is DeviceState.REKEYING
    assert within(gaps(sent), REKEYING)
    assert sent[-1] + JOINING[1] < 180.0 < sent[-1] + REKEYING[0]  # this seed's last rekey init
    assert device.handle_timeout(180.0) == [SessionLost(None)]
    assert [is_init(d) for d in device.datagrams_to_send()] == [True]  # its joining retry was already due
    later = [180.0, *init_times(device, 200.0, now=180.0)]
    assert len(later) >= 8
    assert within(gaps(later), JOINING)


def test_a_rekey_init_pending_when_the_server_is_declared_dead_is_retried_at_the_joining_pace() -> None:
    device, server = make()
    establish(device, server)
    exchange_keepalives(device, server, 75.5)
    server.send(device.public_key, b"last words", 76.0)
    assert to_device(server, device, 76.0) == [Message(None, b"last words")]  # heard at 76: dead at 121
    sent = init_times(device, 135.0, now=76.0)  # from now on the server answers nothing
    assert sent[0] == 120.0  # the rekey, retried at first after REKEY_TIMEOUT ...
    assert device.state is DeviceState.HANDSHAKING
    assert 120.0 + JOINING[0] <= sent[1] <= 120.0 + JOINING[1]  # ... but the session was lost at 121
    assert len(sent) >= 6
    assert within(gaps(sent[1:]), JOINING)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rekeying=st.booleans())
def test_retry_instants_lie_in_the_stated_interval(seed: int, rekeying: bool) -> None:
    device, server = make(seed)
    if rekeying:  # a current session: answer everything but the inits, which start at 120 s
        establish(device, server)
        sent = rekey_init_times(device, server, 179.9)
        bounds = REKEYING
    else:
        device.connect(0.0)
        device.datagrams_to_send()
        sent = [0.0, *init_times(device, 60.0)]
        bounds = JOINING
    assert len(sent) >= 10
    assert within(gaps(sent), bounds)


def under_load(seed: int = 3) -> tuple[DeviceSession, ServerEndpoint, bytes, bytes]:
    """A device whose first init got a CookieReply: (device, server, that init, that reply)."""
    device, server = make(seed)
    server.set_under_load(True)
    device.connect(0.0)
    (init,) = device.datagrams_to_send()
    assert server.receive_datagram(init, A, 0.0) == []
    ((reply, _),) = server.datagrams_to_send()
    assert isinstance(parse(reply), CookieReply)
    return device, server, init, reply


def test_a_cookie_reply_brings_one_prompt_resend_with_mac2() -> None:
    device, server, init, reply = under_load()
    assert device.receive_datagram(reply, 0.05) == []
    (resent,) = device.datagrams_to_send()
    first, second = parse(init), parse(resent)
    assert isinstance(first, HandshakeInit)
    assert isinstance(second, HandshakeInit)
    assert first.mac2 == bytes(16)
    assert second.mac2 != bytes(16)
    assert (second.sender_index, second.ephemeral) != (first.sender_index, first.ephemeral)
    # a second CookieReply for the same init: that init is no longer pending, nothing is sent
    assert device.receive_datagram(reply, 0.06) == [Dropped("UnknownKeyError")]
    assert device.datagrams_to_send() == []
    retry_at = device.next_timeout()  # an init with mac2: the server was under load, so the slower pace
    assert retry_at is not None
    assert 0.05 + REKEYING[0] <= retry_at <= 0.05 + REKEYING[1]
    assert server.receive_datagram(resent, A, 0.07) == []
    assert to_device(server, device, 0.07) == [SessionStarted(None, server.boot, False)]
    assert device.statistics().inits_sent == 2


def test_a_cookie_reply_to_the_resend_brings_no_further_resend() -> None:
    device, server, _, reply = under_load()
    device.receive_datagram(reply, 0.05)
    (resent,) = device.datagrams_to_send()
    assert server.receive_datagram(resent, B, 0.06) == []  # seen from another address: its mac2 is not valid
    ((reply_b, address),) = server.datagrams_to_send()
    assert address == B
    assert device.receive_datagram(reply_b, 0.07) == []  # accepted ...
    assert device.statistics().cookies_accepted == 2
    assert device.datagrams_to_send() == []  # ... but not resent: at most two inits per retry interval
    retry_at = device.next_timeout()
    assert retry_at is not None
    assert 0.05 + REKEYING[0] <= retry_at <= 0.05 + REKEYING[1]
    device.handle_timeout(retry_at)
    (retry,) = device.datagrams_to_send()  # a timer's init: a CookieReply to it may bring a resend again
    assert server.receive_datagram(retry, A, retry_at) == []  # carries address B's cookie: not valid from A
    to_device(server, device, retry_at)
    (again,) = device.datagrams_to_send()
    assert server.receive_datagram(again, A, retry_at) == []
    assert to_device(server, device, retry_at) == [SessionStarted(None, server.boot, False)]
    assert device.statistics().inits_sent == 4


def test_forged_or_misdirected_cookie_replies_bring_no_resend() -> None:
    device, _, _, reply = under_load()
    parsed = parse(reply)
    assert isinstance(parsed, CookieReply)
    forged = CookieReply(parsed.receiver_index, bytes(12), parsed.encrypted_cookie).to_bytes()
    other = CookieReply(parsed.receiver_index ^ 1, parsed.nonce, parsed.encrypted_cookie).to_bytes()
    assert device.receive_datagram(forged, 0.05) == [Dropped("AuthError")]
    assert device.receive_datagram(other, 0.05) == [Dropped("UnknownKeyError")]
    assert device.datagrams_to_send() == []
    assert device.statistics().inits_sent == 1
    retry_at = device.next_timeout()
    assert retry_at is not None
    assert JOINING[0] <= retry_at <= JOINING[1]
