"""mac1/mac2, cookie secrets and CookieReply sealing (PROTOCOL.md 3.5)."""

from __future__ import annotations

import hashlib
import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.cookie import (
    ADDRESS_CACHE,
    COOKIE_LIFETIME,
    CookieSealer,
    CookieSecret,
    MacKey,
    _address_bytes_of,
    address_bytes,
    cookie_key,
    mac,
    mac1_key,
    make_cookie_reply,
    open_cookie_reply,
    verify_mac,
)
from loa.protocol.datagram import CookieReply, parse
from loa.protocol.errors import AuthError, LocalProtocolError

SERVER_PUB = bytes(range(32))


def test_definitions() -> None:
    assert mac1_key(SERVER_PUB) == hashlib.blake2s(b"loa mac1" + SERVER_PUB).digest()
    assert cookie_key(SERVER_PUB) == hashlib.blake2s(b"loa cookie" + SERVER_PUB).digest()
    tag = mac(b"k" * 32, b"data")
    assert tag == hashlib.blake2s(b"data", key=b"k" * 32, digest_size=16).digest()
    assert len(tag) == 16
    assert verify_mac(b"k" * 32, b"data", tag)
    assert not verify_mac(b"k" * 32, b"datb", tag)


@pytest.mark.parametrize(
    ("address", "raw"),
    [
        (("192.0.2.7", 4433), "00000000000000000000ffffc0000207" + "1151"),
        (("2001:db8::1", 1), "20010db8000000000000000000000001" + "0001"),
        (("::ffff:192.0.2.7", 65535), "00000000000000000000ffffc0000207" + "ffff"),
    ],
)
def test_address_bytes(address: tuple[str, int], raw: str) -> None:
    assert address_bytes(address).hex() == raw


@pytest.mark.parametrize("address", [("not an ip", 1), ("10.0.0.1", 70000), ("10.0.0.1", -1)])
def test_bad_addresses_are_local_errors(address: tuple[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        address_bytes(address)


def test_cookie_reply_round_trip() -> None:
    cookie, init_mac1, nonce = bytes(range(16)), bytes(range(100, 116)), bytes(12)
    reply = make_cookie_reply(0xA1B2C3D4, cookie, init_mac1, SERVER_PUB, nonce)
    assert isinstance(parse(reply.to_bytes()), CookieReply)
    assert len(reply.to_bytes()) == 52
    assert open_cookie_reply(reply, init_mac1, SERVER_PUB) == cookie
    with pytest.raises(AuthError):
        open_cookie_reply(reply, bytes(16), SERVER_PUB)
    with pytest.raises(AuthError):
        open_cookie_reply(reply, init_mac1, bytes(32))
    tampered = CookieReply(reply.receiver_index, reply.nonce, reply.encrypted_cookie[:-1] + b"\x00")
    with pytest.raises(AuthError):
        open_cookie_reply(tampered, init_mac1, SERVER_PUB)


def test_secret_rotation_keeps_every_cookie_valid_for_its_lifetime() -> None:
    secrets = CookieSecret(random.Random(1).randbytes)
    a, b = ("198.51.100.1", 5000), ("198.51.100.2", 5000)
    data = b"the first 132 bytes of an init"
    cookie0 = secrets.cookie(a, 10.0)  # the first use draws R0
    issued_last = secrets.cookie(a, 129.9)  # R0's last moment as the newest secret
    assert issued_last == cookie0
    tag = mac(cookie0, data)
    assert secrets.verify_mac2(a, data, tag, 200.0)  # rotates: R1 drawn at 200, R0 kept until 10 + 240
    assert not secrets.verify_mac2(b, data, tag, 200.0)
    assert secrets.cookie(a, 200.0) != cookie0
    assert secrets.verify_mac2(a, data, tag, 129.9 + COOKIE_LIFETIME)
    assert not secrets.verify_mac2(a, data, tag, 250.0)


def test_secret_unused_for_long_forgets_the_previous_one() -> None:
    secrets = CookieSecret(random.Random(2).randbytes)
    addr = ("10.1.2.3", 9)
    tag = mac(secrets.cookie(addr, 0.0), b"x")
    assert not secrets.verify_mac2(addr, b"x", tag, 1000.0)
    assert secrets.verify_mac2(addr, b"x", mac(secrets.cookie(addr, 1000.0), b"x"), 1000.0)


def _reference_address_bytes(address: tuple[object, object]) -> bytes:
    """The definition: ipaddress's reading of the host, IPv4 mapped into IPv6, then the port."""
    ip = ipaddress.ip_address(address[0])  # type: ignore[arg-type]
    port = int(address[1])  # type: ignore[call-overload]
    if not 0 <= port <= 0xFFFF:
        raise ValueError(port)
    raw = ipaddress.IPv6Address(f"::ffff:{ip}").packed if ip.version == 4 else ip.packed
    return raw + port.to_bytes(2, "big")


@given(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
       st.integers(0, 0xFFFF))
def test_address_bytes_of_any_ipv4_address_is_the_definition(octets: tuple[int, ...], port: int) -> None:
    host = ".".join(map(str, octets))
    assert address_bytes((host, port)) == _reference_address_bytes((host, port))


@given(st.text(alphabet="0123456789.:abcdefx ²+_-", max_size=24), st.integers(-2, 70000))
def test_address_bytes_of_any_text_agrees_with_the_definition_or_refuses(host: str, port: int) -> None:
    try:
        expected = _reference_address_bytes((host, port))
    except ValueError:
        with pytest.raises(LocalProtocolError):
            address_bytes((host, port))
    else:
        assert address_bytes((host, port)) == expected


@pytest.mark.parametrize("address", [([1], 2), ("10.0.0.1",), ("10.0.0.1", [2]), 7, None, ({}, 1)])
def test_addresses_that_cannot_be_looked_up_are_local_errors(address: object) -> None:
    with pytest.raises(LocalProtocolError):
        address_bytes(address)  # type: ignore[arg-type]


def test_kept_address_forms_are_bounded_and_equal_to_fresh_ones() -> None:
    hosts = [(f"10.{i >> 8 & 255}.{i & 255}.1", 1000 + i % 7) for i in range(ADDRESS_CACHE + 500)]
    first = [address_bytes(a) for a in hosts]
    assert _address_bytes_of.cache_info().currsize <= ADDRESS_CACHE
    assert [address_bytes(a) for a in reversed(hosts)] == first[::-1]
    assert first == [_reference_address_bytes(a) for a in hosts]
    assert address_bytes(("10.0.0.1", True)) == address_bytes(("10.0.0.1", 1)) == _reference_address_bytes(
        ("10.0.0.1", 1))


@given(st.binary(min_size=1, max_size=32), st.binary(max_size=300))
def test_a_mac_key_is_mac_under_that_key(key: bytes, data: bytes) -> None:
    keyed = MacKey(key)
    tag = keyed(data)
    assert tag == mac(key, data) == keyed(data)
    assert keyed.verify(data, tag)
    assert not keyed.verify(data + b"x", tag)
    assert not keyed.verify(data, bytes(16) if tag != bytes(16) else bytes([1]) * 16)


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.binary(min_size=12, max_size=12))
def test_the_sealer_makes_the_cookie_reply_make_cookie_reply_makes(index: bytes, cookie: bytes, init_mac1: bytes,
                                                                   nonce: bytes) -> None:
    sealed = CookieSealer(SERVER_PUB).seal(index, cookie, init_mac1, nonce)
    reply = make_cookie_reply(int.from_bytes(index, "big"), cookie, init_mac1, SERVER_PUB, nonce)
    assert sealed == reply.to_bytes()
    parsed = parse(sealed)
    assert isinstance(parsed, CookieReply)
    assert open_cookie_reply(parsed, init_mac1, SERVER_PUB) == cookie


@pytest.mark.parametrize(("index", "cookie", "nonce"), [(bytes(3), bytes(16), bytes(12)),
                                                         (bytes(4), bytes(15), bytes(12)),
                                                         (bytes(4), bytes(16), bytes(13))])
def test_the_sealer_refuses_wrong_sizes(index: bytes, cookie: bytes, nonce: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        CookieSealer(SERVER_PUB).seal(index, cookie, bytes(16), nonce)


@given(st.lists(st.floats(0, 1000), min_size=1, max_size=6), st.sampled_from([0, 1, 2]), st.binary(max_size=40))
def test_check_mac2_answers_as_verify_mac2_and_cookie(times: list[float], which: int, data: bytes) -> None:
    """None exactly when verify_mac2 accepts; otherwise the cookie :meth:`cookie` gives at that time."""
    a, b = ("198.51.100.1", 5000), ("198.51.100.2", 5000)
    checked, reference = CookieSecret(random.Random(4).randbytes), CookieSecret(random.Random(4).randbytes)
    tags = [bytes(16)]
    for now in sorted(times):
        tags.append(mac(reference.cookie(a, now), data))
        checked.cookie(a, now)
        tag = tags[-1 - min(which, len(tags) - 1)]
        answer = checked.check_mac2(address_bytes(a), data, tag, now)
        assert (answer is None) == reference.verify_mac2(a, data, tag, now)
        if answer is not None:
            assert answer == reference.cookie(a, now)
        assert checked.check_mac2(address_bytes(b), data, tag, now) == reference.cookie(b, now)
