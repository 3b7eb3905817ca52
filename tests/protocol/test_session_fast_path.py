"""The server decides on an init's and a transport's bytes before it parses them (PROTOCOL.md 3.1.2, 3.3.1, 3.5):
those decisions are exactly the ones the full parse would make, for random bytes and for mutations of real
datagrams, with and without cookie mode."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loa.protocol._session_core import check_init_mac1
from loa.protocol.cookie import address_bytes, mac, mac1_key, open_cookie_reply, verify_mac
from loa.protocol.datagram import (
    MAX_DATAGRAM,
    CookieReply,
    HandshakeInit,
    Transport,
    is_init,
    parse,
    transport_index,
)
from loa.protocol.errors import BadMacError, RemoteProtocolError
from loa.protocol.session import DeviceSession, DeviceState, Dropped, ServerEndpoint

A = ("198.51.100.7", 40000)
#: The drops the server decides before parsing: the structural ones (3.1.2), mac1, a transport for no session.
DECIDED_EARLY = {"OversizeError", "TruncatedError", "UnknownTypeError", "UnknownVersionError", "ReservedBitsError",
                 "BadLengthError", "BadMacError", "UnknownKeyError"}


def _full_parse(data: bytes) -> Any:
    try:
        return parse(data)
    except RemoteProtocolError as exc:
        return type(exc).__name__


class Setting:
    """A server with one confirmed session (its local index is known), a second device's init with a zero mac2
    and the cookie that server gives that device at address A."""

    def __init__(self) -> None:
        rng = random.Random(5)
        self.server = ServerEndpoint(static_private=rng.randbytes(32), is_enrolled=lambda _pub: True,
                                     random_bytes=rng.randbytes)
        device = DeviceSession(static_private=rng.randbytes(32), server_public=self.server.public_key,
                               random_bytes=rng.randbytes)
        device.connect(0.0)
        for _ in range(2):
            for data in device.datagrams_to_send():
                self.server.receive_datagram(data, A, 0.0)
            for data, _ in self.server.datagrams_to_send():
                device.receive_datagram(data, 0.0)
        assert device.state is DeviceState.ESTABLISHED
        device.send(b"a control message", 0.5)
        (self.transport,) = device.datagrams_to_send()
        self.known = {parse(self.transport).receiver_index}  # type: ignore[union-attr]
        other = DeviceSession(static_private=rng.randbytes(32), server_public=self.server.public_key,
                              random_bytes=rng.randbytes)
        other.connect(0.5)
        (self.init,) = other.datagrams_to_send()
        self.server.set_under_load(True)
        self.server.receive_datagram(self.init, A, 0.5)
        ((reply, _),) = self.server.datagrams_to_send()
        cookie_reply = parse(reply)
        assert isinstance(cookie_reply, CookieReply)
        self.cookie = open_cookie_reply(cookie_reply, self.init[116:132], self.server.public_key)
        self.with_cookie = self.init[:132] + mac(self.cookie, self.init[:132])
        self.mac1_key = mac1_key(self.server.public_key)

    def expected(self, data: bytes, under_load: bool) -> str:
        """The full path's decision: parse, then mac1 on the parsed init, then mac2 with the known cookie; a
        transport is looked up after it was parsed. "later" for what goes on to the Noise and transport checks."""
        message = _full_parse(data)
        if isinstance(message, str):
            return message
        if isinstance(message, HandshakeInit):
            try:
                check_init_mac1(message, self.mac1_key)
            except BadMacError:
                return "BadMacError"
            raw = message.to_bytes()
            if under_load and not verify_mac(self.cookie, raw[:132], message.mac2):
                return "cookie reply"
            return "later"
        if isinstance(message, Transport):
            return "later" if message.receiver_index in self.known else "UnknownKeyError"
        return "UnknownTypeError"

    def decided(self, data: bytes, under_load: bool) -> str:
        """What the server did with ``data``: the name of an early drop, "cookie reply", or "later"."""
        server = self.server
        server.set_under_load(under_load)
        before = server.statistics()
        events = server.receive_datagram(data, A, 1.0)
        out = server.datagrams_to_send()
        replies = server.statistics().cookie_replies_sent - before.cookie_replies_sent
        drops = [event.error for event in events if isinstance(event, Dropped)]
        if replies:
            assert replies == 1
            assert not drops
            ((reply, address),) = out
            assert address == A
            cookie_reply = parse(reply)
            assert isinstance(cookie_reply, CookieReply)
            opened = open_cookie_reply(cookie_reply, data[116:132], server.public_key)
            assert opened == self.cookie  # the cookie of A, sealed to this init's mac1
            return "cookie reply"
        if drops and drops[0] in DECIDED_EARLY:
            return drops[0]
        return "later"


@pytest.fixture(scope="module")
def setting() -> Setting:
    return Setting()


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, extra: bytes) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    if cut is not None:
        del out[cut % (len(out) + 1):]
    return bytes(out) + extra


edits = st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3)
mutations = st.tuples(edits, st.none() | st.integers(0, 2000), st.binary(max_size=8))


def _remac(key: bytes, data: bytes, cookie: bytes | None) -> bytes:
    """``data`` with mac1 (and, given the cookie, mac2) made valid again over its mutated bytes."""
    if len(data) != HandshakeInit.SIZE:
        return data
    head = data[:116] + mac(key, data[:116])
    return head + (mac(cookie, head) if cookie is not None else data[132:])


@st.composite
def datagrams(draw: Callable[..., Any], setting: Setting) -> bytes:
    kind = draw(st.sampled_from(["random", "init", "init with cookie", "transport", "loa header"]))
    if kind == "random":
        return bytes(draw(st.binary(max_size=MAX_DATAGRAM + 40)))
    if kind == "loa header":  # a plausible header and any length: the structural checks in every order
        head = bytes([draw(st.integers(0, 6)), draw(st.sampled_from([0, 1, 2])), draw(st.sampled_from([0, 1])), 0])
        return head + bytes(draw(st.binary(max_size=200)))
    base = {"init": setting.init, "init with cookie": setting.with_cookie, "transport": setting.transport}[kind]
    data = _mutate(base, *draw(mutations))
    if kind != "transport" and draw(st.booleans()):
        data = _remac(setting.mac1_key, data, setting.cookie if draw(st.booleans()) else None)
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), under_load=st.booleans())
def test_the_early_decisions_are_the_full_parse_s(setting: Setting, data: st.DataObject, under_load: bool) -> None:
    datagram = data.draw(datagrams(setting))
    assert setting.decided(datagram, under_load) == setting.expected(datagram, under_load)


@pytest.mark.parametrize("under_load", [False, True])
def test_every_template_is_decided_as_the_full_parse_decides(setting: Setting, under_load: bool) -> None:
    """The unmutated datagrams, and each with one bit of every byte flipped in turn."""
    for base in (setting.init, setting.with_cookie, setting.transport):
        cases = [base] + [base[:i] + bytes([base[i] ^ 1 << (i % 8)]) + base[i + 1:] for i in range(len(base))]
        for datagram in cases:
            assert setting.decided(datagram, under_load) == setting.expected(datagram, under_load), datagram.hex()
    assert setting.decided(setting.with_cookie, True) == "later"  # the valid cookie goes on to the Noise checks
    assert setting.decided(setting.init, True) == "cookie reply"
    bad = bytearray(setting.init)
    bad[120] ^= 0x40
    assert setting.decided(bytes(bad), under_load) == "BadMacError"


@given(st.binary(max_size=MAX_DATAGRAM + 40))
@example(bytes(HandshakeInit.SIZE))
@example(b"\x01\x01\x00\x00" + bytes(144))
@example(b"\x01\x01\x00\x00" + bytes(145))
@example(b"\x04\x01\x00\x00" + bytes(28))
@example(b"\x04\x01\x00\x00" + bytes(27))
@example(b"\x04\x01\x00\x00" + bytes(MAX_DATAGRAM - 4))
@example(b"\x04\x01\x00\x00" + bytes(MAX_DATAGRAM - 3))
@example(b"\x04\x01\x00\x01" + bytes(40))
def test_the_shape_checks_agree_with_parse(data: bytes) -> None:
    message = _full_parse(data)
    assert is_init(data) == isinstance(message, HandshakeInit)
    index = transport_index(data)
    assert (index is not None) == isinstance(message, Transport)
    if isinstance(message, Transport):
        assert index == message.receiver_index
    assert is_init(bytearray(data)) == is_init(data)
    assert transport_index(memoryview(data)) == index


@given(st.binary(min_size=112, max_size=112), st.binary(min_size=32, max_size=32))
def test_an_init_with_a_bad_mac1_is_dropped_before_anything_else_happens(body: bytes, macs: bytes) -> None:
    """A bad mac1 changes nothing: no reply, no init counted towards the load trigger, only the drop."""
    server = ServerEndpoint(static_private=bytes(range(32)), is_enrolled=lambda _pub: True,
                            random_bytes=random.Random(1).randbytes)
    data = b"\x01\x01\x00\x00" + body + macs
    if verify_mac(mac1_key(server.public_key), data[:116], data[116:132]):  # pragma: no cover - 2^-128
        return
    for under_load in (False, True):
        server.set_under_load(under_load)
        assert server.receive_datagram(data, A, 1.0) == [Dropped("BadMacError")]
        assert server.datagrams_to_send() == []
    stats = server.statistics()
    assert (stats.inits, stats.cookie_replies_sent, dict(stats.drops)) == (0, 0, {"BadMacError": 2})


def test_the_cookie_is_computed_from_the_source_address_as_the_spec_says(setting: Setting) -> None:
    """The cookie a server gives is MAC(R, address_bytes(A)) under its current secret: the same address gets the
    same cookie, another address another one."""
    server = setting.server
    server.set_under_load(True)
    cookies = []
    for address in (A, A, ("198.51.100.7", 40001), ("2001:db8::7", 40000)):
        server.receive_datagram(setting.init, address, 1.0)
        ((reply, to),) = server.datagrams_to_send()
        assert to == address
        cookies.append(open_cookie_reply(parse(reply), setting.init[116:132], server.public_key))  # type: ignore[arg-type]
    assert cookies[0] == cookies[1] == setting.cookie
    assert len(set(cookies[1:])) == 3
    assert len({address_bytes(a) for a in (A, ("198.51.100.7", 40001), ("2001:db8::7", 40000))}) == 3
