"""Session datagram layouts (PROTOCOL.md 2.2-2.4, 3.3-3.6): sizes, round trips, every structural error."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.datagram import (
    MAX_DATAGRAM,
    CookieReply,
    Datagram,
    HandshakeInit,
    HandshakeResponse,
    Transport,
    classify,
    parse,
)
from loa.protocol.errors import (
    BadLengthError,
    LocalProtocolError,
    OversizeError,
    RemoteProtocolError,
    ReservedBitsError,
    TruncatedError,
    UnknownTypeError,
    UnknownVersionError,
)


def _b(n: int, start: int = 0) -> bytes:
    return bytes((start + i) % 256 for i in range(n))


INIT = HandshakeInit(0x01020304, _b(32), _b(48, 32), _b(28, 80), _b(16, 108), _b(16, 124))
RESPONSE = HandshakeResponse(7, 0x01020304, _b(32), _b(20, 32), _b(16, 52), bytes(16))
COOKIE = CookieReply(0x01020304, _b(12), _b(32, 12))
KEEPALIVE = Transport(9, 0, _b(16))
SAMPLES: list[Datagram] = [INIT, RESPONSE, COOKIE, KEEPALIVE, Transport(2**32 - 1, 2**64 - 1, _b(1184))]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: HandshakeInit | HandshakeResponse | CookieReply | Transport) -> None:
    data = message.to_bytes()
    assert parse(data) == message
    assert data[1:4] == b"\x01\x00\x00"
    assert classify(data) == "loa"


def test_sizes_and_offsets() -> None:
    init = INIT.to_bytes()
    assert len(init) == 148
    assert init[:8] == bytes.fromhex("0101000001020304")
    assert init[116:132] == INIT.mac1
    assert init[132:] == INIT.mac2
    assert init[8:116] == INIT.noise_message
    response = RESPONSE.to_bytes()
    assert len(response) == 96
    assert response[:12] == bytes.fromhex("020100000000000701020304")
    assert response[12:64] == RESPONSE.noise_message
    assert len(COOKIE.to_bytes()) == 52
    keepalive = KEEPALIVE.to_bytes()
    assert len(keepalive) == 32
    assert keepalive[:16] == KEEPALIVE.header == bytes.fromhex("04010000000000090000000000000000")
    assert len(SAMPLES[-1].to_bytes()) == MAX_DATAGRAM


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", TruncatedError),
        (b"\x01", TruncatedError),
        (b"\x04\x01\x00", TruncatedError),
        (b"\x00\x01\x00\x00", UnknownTypeError),
        (b"\x05\x01\x00\x00", UnknownTypeError),
        (b"\x80\x01\x00\x00", UnknownTypeError),
        (b"\x01\x02\x00\x00" + bytes(144), UnknownVersionError),
        (b"\x01\x00\x00\x00" + bytes(144), UnknownVersionError),
        (b"\x01\x01\x00\x01" + bytes(144), ReservedBitsError),
        (b"\x04\x01\x80\x00" + bytes(28), ReservedBitsError),
        (INIT.to_bytes()[:147], TruncatedError),
        (INIT.to_bytes() + b"\x00", BadLengthError),
        (RESPONSE.to_bytes()[:95], TruncatedError),
        (RESPONSE.to_bytes() + b"\x00", BadLengthError),
        (COOKIE.to_bytes()[:51], TruncatedError),
        (COOKIE.to_bytes() + b"\x00", BadLengthError),
        (KEEPALIVE.to_bytes()[:31], TruncatedError),
        (b"\x04\x01\x00\x00" + bytes(1197), OversizeError),
        (b"\x77" + bytes(1300), OversizeError),
    ],
)
def test_parse_errors(data: bytes, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(error) as info:
        parse(data)
    assert type(info.value) is error


def test_every_truncation_is_truncated() -> None:
    for message in SAMPLES[:4]:
        data = message.to_bytes()
        for cut in range(1, len(data)):
            with pytest.raises(TruncatedError):
                parse(data[:cut])


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"\x01", "loa"), (b"\x04\x01", "loa"), (b"\x80\x6f", "rtp"), (b"\xbf\xe0", "rtp"), (b"\x80\xc8", "rtcp"),
     (b"\x81\xcd", "rtcp"), (b"\x80\xdf", "rtcp"), (b"\x80\xbf", "rtp"), (b"\x05", "beacon"), (b"\x06", "notice")],
)
def test_classify(data: bytes, kind: str) -> None:
    assert classify(data) == kind


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"", TruncatedError), (b"\x80", TruncatedError), (b"\x00", UnknownTypeError), (b"\x07", UnknownTypeError),
     (b"\x7f", UnknownTypeError), (b"\xc0\xc8", UnknownTypeError), (b"\x16\xfe", UnknownTypeError),
     (b"\x80" * 1201, OversizeError)],
)
def test_classify_errors(data: bytes, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(error):
        classify(data)


@pytest.mark.parametrize(
    "build",
    [
        lambda: HandshakeInit(-1, _b(32), _b(48), _b(28), _b(16), _b(16)),
        lambda: HandshakeInit(2**32, _b(32), _b(48), _b(28), _b(16), _b(16)),
        lambda: HandshakeInit(0, _b(31), _b(48), _b(28), _b(16), _b(16)),
        lambda: HandshakeResponse(0, 0, _b(32), _b(21), _b(16), _b(16)),
        lambda: CookieReply(0, _b(11), _b(32)),
        lambda: Transport(0, 2**64, _b(16)),
        lambda: Transport(0, 0, _b(15)),
        lambda: Transport(0, 0, _b(1185)),
    ],
)
def test_impossible_fields_are_local_errors(build: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        build()


@given(st.binary(max_size=1300))
def test_arbitrary_bytes_raise_only_remote_errors(data: bytes) -> None:
    for function in (parse, classify):
        with contextlib.suppress(RemoteProtocolError):
            function(data)


@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=1250))
def test_arbitrary_bodies_parse_or_raise_remote_errors(kind: int, body: bytes) -> None:
    data = bytes((kind, 1, 0, 0)) + body
    try:
        message = parse(data)
    except RemoteProtocolError:
        return
    assert message.to_bytes() == data
