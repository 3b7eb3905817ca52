"""Arbitrary input into every session-layer parser and receiver, and the server's amplification bound."""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loa.protocol.cookie import open_cookie_reply
from loa.protocol.datagram import CookieReply, classify, parse
from loa.protocol.errors import RemoteProtocolError, ReplayError, error_by_name
from loa.protocol.replay import ReplayWindow
from loa.protocol.session import DeviceSession, DeviceState, Dropped, Event, ServerEndpoint

A = ("198.51.100.7", 40000)


def _pair(seed: int = 0) -> tuple[DeviceSession, ServerEndpoint]:
    rng = random.Random(seed)
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                            random_bytes=rng.randbytes)
    device = DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                           random_bytes=rng.randbytes)
    return device, server


def _established() -> tuple[DeviceSession, ServerEndpoint]:
    device, server = _pair()
    device.connect(0.0)
    for _ in range(2):
        for data in device.datagrams_to_send():
            server.receive_datagram(data, A, 0.0)
        for data, _ in server.datagrams_to_send():
            device.receive_datagram(data, 0.0)
    assert device.state is DeviceState.ESTABLISHED
    return device, server


def _only_drops(events: list[Event]) -> None:
    assert len(events) == 1
    assert isinstance(events[0], Dropped)
    assert issubclass(error_by_name(events[0].error), RemoteProtocolError)


datagrams = st.one_of(
    st.binary(max_size=1300),
    st.tuples(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=1250)).map(lambda t: bytes((t[0], 1, 0, 0)) + t[1]),
    st.tuples(st.sampled_from([(1, 144), (2, 92), (3, 48), (4, 28), (4, 60)]), st.randoms()).map(
        lambda t: bytes((t[0][0], 1, 0, 0)) + t[1].randbytes(t[0][1])
    ),
)


@given(datagrams)
def test_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for function in (parse, classify):
        with contextlib.suppress(RemoteProtocolError):
            function(data)
    if len(data) == 52 and data[:4] == b"\x03\x01\x00\x00":
        reply = parse(data)
        assert isinstance(reply, CookieReply)
        with contextlib.suppress(RemoteProtocolError):
            open_cookie_reply(reply, bytes(16), bytes(32))


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_replay_window_raises_only_replay_errors(counter: int) -> None:
    window = ReplayWindow.from_state(5000, [4000, 4999])
    with contextlib.suppress(ReplayError):
        window.accept(counter)


FRESH_DEVICE, FRESH_SERVER = _pair()
LIVE_DEVICE, LIVE_SERVER = _established()


@given(datagrams, st.floats(min_value=0.0, max_value=1e6))
def test_receive_datagram_turns_any_bytes_into_a_counted_drop(data: bytes, now: float) -> None:
    for device in (FRESH_DEVICE, LIVE_DEVICE):
        _only_drops(device.receive_datagram(data, now))
    for server in (FRESH_SERVER, LIVE_SERVER):
        _only_drops(server.receive_datagram(data, A, now))
        assert server.datagrams_to_send() == []


ADDRESSES = [("198.51.100.1", 1000), ("198.51.100.2", 2000), ("2001:db8::3", 3000), ("203.0.113.4", 4000)]

actions = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(st.just("complete"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(st.just("replay"), st.integers(0, 500), st.integers(0, 3)),
        st.tuples(st.just("flip"), st.integers(0, 500), st.integers(0, 3), st.integers(0, 1200)),
        st.tuples(st.just("junk"), st.sampled_from([1, 4]), st.integers(0, 3), st.integers(0, 2**32)),
        st.tuples(st.just("load"), st.sampled_from([True, False, None])),
        st.tuples(st.just("wait"), st.sampled_from([0.001, 0.3, 5.4, 60.0, 200.0])),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(actions)
def test_the_server_never_amplifies_towards_an_unverified_address(script: list[tuple[Any, ...]]) -> None:
    rng = random.Random(1)
    enrolled: set[bytes] = set()
    server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda pub: pub in enrolled,
                            random_bytes=rng.randbytes, cookie_threshold=4)
    devices = [DeviceSession(static_private=rng.randbytes(32), server_public=server.public_key,
                             random_bytes=rng.randbytes) for _ in range(3)]
    enrolled.update(d.public_key for d in devices[:2])  # the third is not enrolled
    received: Counter[tuple[str, int]] = Counter()
    sent: Counter[tuple[str, int]] = Counter()
    verified: set[tuple[str, int]] = set()
    seen: list[bytes] = []
    now = 0.0
    answers: list[tuple[bytes, tuple[str, int]]] = []

    def to_server(data: bytes, address: tuple[str, int]) -> None:
        received[address] += len(data)
        seen.append(data)
        server.receive_datagram(data, address, now)
        for device in devices:
            if (where := server.address_of(device.public_key)) is not None:
                verified.add(where)
        for out, destination in server.datagrams_to_send():
            sent[destination] += len(out)
            answers.append((out, destination))
            seen.append(out)

    for action in script:
        kind = action[0]
        if kind == "connect":
            device = devices[action[1]]
            if device.state is DeviceState.IDLE:
                device.connect(now)
            else:
                device.handle_timeout(device.next_timeout() or now)
            for data in device.datagrams_to_send():
                to_server(data, ADDRESSES[action[2]])
        elif kind == "complete":
            device = devices[action[1]]
            for out, _ in answers:
                device.receive_datagram(out, now)
            answers.clear()
            for data in device.datagrams_to_send():
                to_server(data, ADDRESSES[action[2]])
        elif kind == "replay" and seen:
            to_server(seen[action[1] % len(seen)], ADDRESSES[action[2]])
        elif kind == "flip" and seen:
            data = bytearray(seen[action[1] % len(seen)])
            data[action[3] % len(data)] ^= 0x20
            to_server(bytes(data), ADDRESSES[action[2]])
        elif kind == "junk":
            body = random.Random(action[3]).randbytes(144 if action[1] == 1 else 40)
            to_server(bytes((action[1], 1, 0, 0)) + body, ADDRESSES[action[2]])
        elif kind == "load":
            server.set_under_load(action[1])
        elif kind == "wait":
            now += action[1]
            server.handle_timeout(now)
            for out, destination in server.datagrams_to_send():
                sent[destination] += len(out)
        for address in ADDRESSES:
            if address not in verified:
                assert sent[address] <= received[address], (address, sent[address], received[address])
