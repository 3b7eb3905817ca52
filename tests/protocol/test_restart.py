"""Restart notices (PROTOCOL.md section 3.16): the key, the layout, the order of the checks, and that nothing but
the server's own notice for the current session's boot passes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.datagram import classify
from loa.protocol.errors import (
    BadLengthError,
    BadMacError,
    FieldError,
    LocalProtocolError,
    OversizeError,
    RemoteProtocolError,
    ReplayError,
    ReservedBitsError,
    TruncatedError,
    UnknownTypeError,
    UnknownVersionError,
)
from loa.protocol.noise import x25519_public
from loa.protocol.restart import NOTICE_SIZE, check_notice, encode_notice, notice_key, parse_notice

SERVER = hashlib.blake2s(b"restart test: server").digest()
DEVICE = hashlib.blake2s(b"restart test: device").digest()
KEY = notice_key(SERVER, x25519_public(DEVICE))
boots = st.integers(0, 0xFFFFFFFF)


def test_both_ends_derive_the_same_key_and_it_is_the_pairs_own() -> None:
    assert notice_key(DEVICE, x25519_public(SERVER)) == KEY
    other = hashlib.blake2s(b"restart test: other device").digest()
    assert notice_key(SERVER, x25519_public(other)) != KEY
    assert len(KEY) == 32


@given(boots, boots)
def test_a_notice_round_trips_and_is_28_bytes(old: int, new: int) -> None:
    if old == new:
        with pytest.raises(LocalProtocolError):
            encode_notice(KEY, old, new)
        return
    data = encode_notice(KEY, old, new)
    assert len(data) == NOTICE_SIZE
    assert data[:4] == b"\x06\x01\x00\x00"
    assert classify(data) == "notice"
    assert parse_notice(data)[:2] == (old, new)
    assert check_notice(KEY, data, old) == new


@given(boots, boots, st.integers(0, NOTICE_SIZE - 1), st.integers(1, 255))
def test_any_changed_byte_is_refused(old: int, new: int, at: int, flip: int) -> None:
    if old == new:
        return
    data = bytearray(encode_notice(KEY, old, new))
    data[at] ^= flip
    with pytest.raises(RemoteProtocolError):
        check_notice(KEY, bytes(data), old)


@given(st.binary(max_size=1300), boots)
def test_any_bytes_give_a_boot_or_a_named_error(data: bytes, boot: int) -> None:
    try:
        check_notice(KEY, data, boot)
    except RemoteProtocolError:
        return
    assert len(data) == NOTICE_SIZE
    assert data[:4] == b"\x06\x01\x00\x00"


GOOD = encode_notice(KEY, 0x5EED5EED, 0x0BADCAFE)


@pytest.mark.parametrize(("data", "boot", "error"), [
    (b"\x06" * 1201, 0x5EED5EED, OversizeError),
    (b"", 0x5EED5EED, TruncatedError),
    (b"\x05" + GOOD[1:], 0x5EED5EED, UnknownTypeError),
    (GOOD[:3], 0x5EED5EED, TruncatedError),
    (b"\x06\x02" + GOOD[2:], 0x5EED5EED, UnknownVersionError),
    (b"\x06\x01\x00\x01" + GOOD[4:], 0x5EED5EED, ReservedBitsError),
    (GOOD[:27], 0x5EED5EED, TruncatedError),
    (GOOD + b"\x00", 0x5EED5EED, BadLengthError),
    (GOOD, 0x5EED5EEE, ReplayError),
    (GOOD[:8] + GOOD[4:8] + GOOD[12:], 0x5EED5EED, FieldError),
    (GOOD[:12] + bytes(16), 0x5EED5EED, BadMacError),
    (GOOD, 0x5EED5EED, None),
])
def test_the_checks_come_in_the_spec_order(data: bytes, boot: int, error: type[Exception] | None) -> None:
    if error is None:
        assert check_notice(KEY, data, boot) == 0x0BADCAFE
        return
    with pytest.raises(error):
        check_notice(KEY, data, boot)


def test_a_boot_outside_32_bits_is_refused_when_encoding() -> None:
    with pytest.raises(LocalProtocolError):
        encode_notice(KEY, -1, 2)
    with pytest.raises(LocalProtocolError):
        encode_notice(KEY, 1, 1 << 32)
