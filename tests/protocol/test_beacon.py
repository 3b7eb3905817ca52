"""Alert beacons (PROTOCOL.md section 6.4.2): the datagram's layout, its checks in order, the verification bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.beacon import (
    BEACON_OVERHEAD,
    BEACON_VERIFY_BURST,
    BEACON_VERIFY_RATE,
    MAX_BEACON_BODY,
    BeaconLimiter,
    encode_beacon,
    parse_beacon,
)
from loa.protocol.datagram import MAX_DATAGRAM, classify
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


@given(st.binary(min_size=1, max_size=MAX_BEACON_BODY), st.binary(min_size=64, max_size=64))
def test_encode_then_parse_gives_back_body_and_signature(body: bytes, sig: bytes) -> None:
    datagram = encode_beacon(body, sig)
    assert len(datagram) == BEACON_OVERHEAD + len(body) <= MAX_DATAGRAM
    assert datagram[:4] == b"\x05\x01\x00\x00"
    assert int.from_bytes(datagram[4:6], "big") == len(body)
    assert classify(datagram) == "beacon"
    assert parse_beacon(datagram) == (body, sig)


@given(st.binary(max_size=1300))
def test_any_bytes_parse_or_raise_a_named_error_and_what_parses_writes_back(data: bytes) -> None:
    try:
        body, sig = parse_beacon(data)
    except RemoteProtocolError:
        return
    assert encode_beacon(body, sig) == data


def test_encode_refuses_what_one_datagram_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        encode_beacon(b"", bytes(64))
    with pytest.raises(LocalProtocolError):
        encode_beacon(bytes(MAX_BEACON_BODY + 1), bytes(64))
    with pytest.raises(LocalProtocolError):
        encode_beacon(b"body", bytes(63))


GOOD = encode_beacon(b"\x81\xa1v\x01", bytes(range(64)))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (GOOD + bytes(MAX_DATAGRAM), OversizeError),
        (b"", TruncatedError),
        (b"\x04" + GOOD[1:], UnknownTypeError),
        (GOOD[:5], TruncatedError),
        (GOOD[:1] + b"\x02" + GOOD[2:], UnknownVersionError),
        (GOOD[:2] + b"\x00\x01" + GOOD[4:], ReservedBitsError),
        (GOOD[:4] + b"\x00\x00" + GOOD[6:], BadLengthError),
        (GOOD[:-1], TruncatedError),
        (GOOD + b"\x00", BadLengthError),
        (GOOD[:4] + b"\x04\x00" + GOOD[6:], TruncatedError),  # announces more than it holds
    ],
)
def test_the_first_failing_check_names_the_error(data: bytes, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(error):
        parse_beacon(data)


def test_the_limiter_allows_a_burst_then_its_rate() -> None:
    limiter = BeaconLimiter()
    assert [limiter.allow(10.0) for _ in range(BEACON_VERIFY_BURST + 3)].count(True) == BEACON_VERIFY_BURST
    assert not limiter.allow(10.0 + 0.5 / BEACON_VERIFY_RATE)  # half a token refilled
    assert limiter.allow(10.0 + 1.0 / BEACON_VERIFY_RATE)
    assert not limiter.allow(10.0 + 1.0 / BEACON_VERIFY_RATE)
    # over a long quiet time the bucket holds the burst, never more
    allowed = [limiter.allow(1000.0) for _ in range(BEACON_VERIFY_BURST + 5)]
    assert allowed.count(True) == BEACON_VERIFY_BURST


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=200))
def test_the_limiter_never_allows_more_than_burst_plus_rate_times_span(times: list[float]) -> None:
    limiter = BeaconLimiter()
    times.sort()
    allowed = sum(limiter.allow(t) for t in times)
    assert allowed <= BEACON_VERIFY_BURST + BEACON_VERIFY_RATE * (times[-1] - times[0]) + 1e-9


def test_a_clock_that_steps_back_refills_nothing() -> None:
    limiter = BeaconLimiter(burst=1, rate=1.0)
    assert limiter.allow(5.0)
    assert not limiter.allow(4.0)
    assert not limiter.allow(5.5)
    assert limiter.allow(6.0)


def test_limiter_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="burst >= 1"):
        BeaconLimiter(burst=0)
    with pytest.raises(ValueError, match="rate > 0"):
        BeaconLimiter(rate=0.0)
