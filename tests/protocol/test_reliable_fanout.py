"""One reliable message to many channels: EncodedMessage (encoded once, only the id differs), the channel's
deadline heap, and ServerConnection.send_encoded_many against the one-at-a-time path it replaces."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.protocol import control as c
from loa.protocol._schema import U32_MAX
from loa.protocol.connection import DeviceConnection, Received, ServerConnection
from loa.protocol.errors import LocalProtocolError
from loa.protocol.noise import x25519_public
from loa.protocol.reliable import MAX_IN_FLIGHT, RTO_INITIAL, EncodedMessage, ReliableChannel

MESSAGES = [
    c.Amp(on=True, preroll_ms=0),
    c.Amp(on=False, preroll_ms=120_000),
    c.SignedAlert(body=bytes(range(256)) * 3, sig=bytes(64)),
    c.Join(bid=7, ssrc=0xDEADBEEF, key=bytes(30), cls=2, lvl=2, policy="resume", zone="X1", delay_ms=500,
           group=None),
    c.Volume(level=55),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MESSAGES), st.integers(1, U32_MAX))
def test_with_id_is_exactly_what_encode_gives(message: c.Message, msg_id: int) -> None:
    assert EncodedMessage(message).with_id(msg_id) == c.encode(dataclasses.replace(message, id=msg_id))


@pytest.mark.parametrize("msg_id", [1, 127, 128, 255, 256, 65535, 65536, U32_MAX])
def test_every_msgpack_integer_width(msg_id: int) -> None:
    message = c.Amp(on=True, preroll_ms=3)
    assert EncodedMessage(message).with_id(msg_id) == c.encode(dataclasses.replace(message, id=msg_id))


def test_refused_like_encode() -> None:
    with pytest.raises(LocalProtocolError):
        EncodedMessage(c.TimeReq(t1=1))  # not reliable
    with pytest.raises(LocalProtocolError):
        EncodedMessage(c.Amp(on=True, preroll_ms=0, id=3))  # the channel numbers it
    with pytest.raises(LocalProtocolError):
        EncodedMessage(c.Volume(level=101))  # out of range
    with pytest.raises(LocalProtocolError):
        EncodedMessage(c.SignedAlert(body=bytes(1160), sig=bytes(64)))  # too long with the longest id


def test_channel_sends_encoded_as_it_sends_messages() -> None:
    plain, fast = ReliableChannel(), ReliableChannel()
    message = c.Amp(on=True, preroll_ms=0)
    for now in (0.0, 0.1, 0.2):
        assert plain.send(message, now) == fast.send_encoded(EncodedMessage(message), now)
    assert plain.outgoing(0.2) == fast.outgoing(0.2)
    for now in (0.5, 1.0, 3.0, 9.0):  # the same retransmissions at the same times
        assert plain.outgoing(now) == fast.outgoing(now)
        assert plain.next_timeout() == fast.next_timeout()


def test_take_encoded_hands_back_what_can_go_now() -> None:
    channel = ReliableChannel()
    message = EncodedMessage(c.Amp(on=True, preroll_ms=0))
    msg_id, data = channel.take_encoded(message, 1.0)
    assert (msg_id, data) == (1, message.with_id(1))
    assert channel.outgoing(1.0) == []  # handed back, not queued
    assert channel.next_timeout() == pytest.approx(1.0 + RTO_INITIAL)
    assert channel.outgoing(1.0 + RTO_INITIAL) == [data]  # and retransmitted like any other
    channel.send(c.Volume(level=3), 1.5)  # something waits to go out: no shortcut past it
    msg_id, data = channel.take_encoded(message, 1.5)
    assert data is None
    assert channel.outgoing(1.5) == [c.encode(c.Volume(level=3, id=2)), message.with_id(3)]


def test_take_encoded_respects_the_window() -> None:
    channel = ReliableChannel()
    message = EncodedMessage(c.Amp(on=True, preroll_ms=0))
    for _ in range(MAX_IN_FLIGHT):
        assert channel.take_encoded(message, 0.0)[1] is not None
    msg_id, data = channel.take_encoded(message, 0.0)
    assert data is None
    assert not channel.is_acked(msg_id)
    assert channel.statistics().queued == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "ack", "tick", "restart"]), st.integers(0, 40),
                          st.floats(0.0, 0.7)), max_size=80), st.integers(0, 3))
def test_deadline_heap_agrees_with_a_scan(steps: list[tuple[str, int, float]], seed: int) -> None:
    """Whatever is sent, acknowledged and retransmitted, the heap finds the same next deadline and the same due
    messages, in id order, as a scan of every message in flight (what the channel did before it had a heap).
    Of messages due together only the oldest goes, unless a new session sends everything; the others go when an
    acknowledgement comes (section 4.3.1)."""
    rng = random.Random(seed)
    channel = ReliableChannel(rng=rng.random)
    now = 0.0
    sent: list[int] = []
    for action, pick, advance in steps:
        now += advance
        waiting = {i for i, p in (channel._in_flight or {}).items() if p.deadline == math.inf}
        if action == "send":
            sent.append(channel.send(c.Volume(level=pick), now))
        elif action == "ack" and sent:
            channel.receive(c.encode(c.Ack(ids=(sent[pick % len(sent)],))), now)
        elif action == "restart":
            channel.retransmit_now(now)
        in_flight = channel._in_flight or {}  # None while nothing is in flight
        flushed = sorted(waiting & in_flight.keys()) if action == "ack" and sent else []
        timed = [p.deadline for p in in_flight.values() if p.deadline != math.inf]
        assert bool(timed) == bool(in_flight)  # what waits for an acknowledgement waits behind a timer
        assert channel._next_deadline() == min(timed, default=None)
        due = sorted(i for i, p in in_flight.items() if now >= p.deadline)
        out = [c.decode(data) for data in channel.outgoing(now)]
        ids = [m.id for m in out if isinstance(m, c.Volume)]
        again = due if action == "restart" else due[:1]
        fresh = [sent[-1]] if action == "send" and sent[-1] not in due else []
        assert ids in (flushed + fresh + again, flushed + again + fresh)
        assert len(channel._timers or ()) <= 2 * len(in_flight) + 64 + len(due) + 1


def _connected(count: int, seed: int) -> tuple[ServerConnection, list[tuple[bytes, DeviceConnection]]]:
    rng = random.Random(seed)
    server_key = rng.randbytes(32)
    keys = [rng.randbytes(32) for _ in range(count)]
    publics = {x25519_public(k) for k in keys}
    server = ServerConnection(static_private=server_key, is_enrolled=publics.__contains__, boot=1,
                              random_bytes=rng.randbytes)
    devices = []
    for i, key in enumerate(keys):
        device = DeviceConnection(static_private=key, server_public=x25519_public(server_key), boot=1,
                                  random_bytes=rng.randbytes)
        address = ("192.0.2.1", 1000 + i)
        device.connect(0.0)
        for data in device.datagrams_to_send():
            server.receive_datagram(data, address, 0.0)
        for data, _ in server.datagrams_to_send():
            device.receive_datagram(data, 0.0)
        device.send(c.Hello(kind="speaker", model="m", fw="1", caps=()), 0.0)
        for data in device.datagrams_to_send():
            server.receive_datagram(data, address, 0.0)
        devices.append((x25519_public(key), device))
    server.handle_timeout(0.05)  # the hellos' acknowledgements
    for data, address in server.datagrams_to_send():
        devices[address[1] - 1000][1].receive_datagram(data, 0.05)
    return server, devices


def test_send_encoded_many_reaches_every_device_once_with_its_own_id() -> None:
    server, devices = _connected(6, seed=3)
    offline = devices[5][0]
    server.endpoint.forget(offline)  # no session: it must wait, then go out with the rest on the next one
    message = c.SignedAlert(body=b"alert body", sig=bytes(64))
    server.send(devices[0][0], c.Volume(level=9), 0.1)  # already in flight on one channel
    ids = server.send_encoded_many([key for key, _ in devices], EncodedMessage(message), 0.2)
    assert server.next_timeout() == pytest.approx(0.1 + RTO_INITIAL)  # the earlier Volume's timer first
    assert ids == [2, 1, 1, 1, 1, 1]
    got: dict[int, list[c.Message]] = {i: [] for i in range(6)}
    for data, address in server.datagrams_to_send():
        i = address[1] - 1000
        got[i] += [e.message for e in devices[i][1].receive_datagram(data, 0.2) if isinstance(e, Received)]
    assert got[0] == [c.Volume(level=9, id=1), dataclasses.replace(message, id=2)]
    for i in range(1, 5):
        assert got[i] == [dataclasses.replace(message, id=1)]
    assert got[5] == []  # waits for its next session...
    device = devices[5][1]
    device.session.close()
    device.connect(0.5)
    for data in device.datagrams_to_send():
        server.receive_datagram(data, ("192.0.2.1", 1005), 0.5)
    for data, _ in server.datagrams_to_send():
        device.receive_datagram(data, 0.5)
    for data in device.datagrams_to_send():  # the hello again (unacknowledged): the session is confirmed
        server.receive_datagram(data, ("192.0.2.1", 1005), 0.5)
    later = [e.message for data, _ in server.datagrams_to_send() for e in device.receive_datagram(data, 0.5)
             if isinstance(e, Received)]
    assert later == [dataclasses.replace(message, id=1)]  # ...and goes out on it


def test_send_encoded_many_retransmits_until_acknowledged() -> None:
    server, devices = _connected(3, seed=5)
    keys = [key for key, _ in devices]
    server.send_encoded_many(keys, EncodedMessage(c.Amp(on=True, preroll_ms=0)), 1.0)
    assert len(server.datagrams_to_send()) == 3
    first, _ = devices[0]
    now = 1.0 + RTO_INITIAL
    assert server.next_timeout() == pytest.approx(now)
    server.handle_timeout(now)
    again = server.datagrams_to_send()
    assert len(again) == 3
    for (data, address), (_, device) in zip(sorted(again, key=lambda d: d[1]), devices, strict=True):
        assert address[1] >= 1000
        device.receive_datagram(data, now)
        device.handle_timeout(now + 0.05)
        for reply in device.datagrams_to_send():
            server.receive_datagram(reply, address, now + 0.05)
    assert all(server.channel(key).statistics().in_flight == 0 for key in keys)
    assert server.next_timeout() is None or server.next_timeout() > now + 10
    assert first in keys


def test_send_encoded_many_keeps_its_timer_when_an_earlier_entry_went_stale() -> None:
    """A message acknowledged before its timer fired leaves its heap entry behind; an alert sent to that device
    before that entry's time relies on it (its own deadline is later) and must still be retransmitted at its own
    RTO when lost, not when the device next sends something."""
    server, devices = _connected(1, seed=7)
    key, device = devices[0]
    server.send(key, c.Volume(level=3), 0.1)  # its timer: 0.1 + RTO_INITIAL = 0.3
    for data, _ in server.datagrams_to_send():
        device.receive_datagram(data, 0.1)
    device.handle_timeout(0.13)  # the acknowledgement, after its 20 ms delay
    for data in device.datagrams_to_send():
        server.receive_datagram(data, ("192.0.2.1", 1000), 0.13)
    assert server.channel(key).statistics().in_flight == 0  # acknowledged: the entry at 0.3 is stale now
    rto = server.channel(key).rto
    server.send_encoded_many([key], EncodedMessage(c.SignedAlert(body=b"alert", sig=bytes(64))), 0.25)
    lost = server.datagrams_to_send()  # the device never gets these
    assert len(lost) == 1
    deadline = 0.25 + rto
    assert deadline > 0.1 + RTO_INITIAL  # later than the stale entry, which stood for it
    assert server.next_timeout() == pytest.approx(deadline)
    server.handle_timeout(deadline)
    again = server.datagrams_to_send()
    assert len(again) == 1
    assert server.channel(key).statistics().retransmitted == 1
    got = [e.message for data, _ in again for e in device.receive_datagram(data, deadline) if isinstance(e, Received)]
    assert [type(m) for m in got] == [c.SignedAlert]
