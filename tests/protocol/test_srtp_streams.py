"""SRTP/SRTCP streams: round trips, replay, tampering, wrong keys, rollover, error mapping."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.protocol.errors import (
    AuthError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
    RemoteProtocolError,
    ReplayError,
    TruncatedError,
    UnknownKeyError,
)
from loa.protocol.rtcp import GenericNack, ReceiverReport, SenderReport, build_rtcp, parse_rtcp
from loa.protocol.rtp import RtpPacket, parse_rtp
from loa.protocol.srtp import StreamProtector, StreamUnprotector, split_key

KEY = bytes(range(30))
SSRC = 0x5EED5EED


def rtp(seq: int, payload: bytes = b"opus-frame", ssrc: int = SSRC) -> bytes:
    return RtpPacket(111, seq & 0xFFFF, seq * 960 & 0xFFFFFFFF, ssrc, payload).to_bytes()


def test_round_trip_and_replay() -> None:
    tx, rx = StreamProtector(KEY), StreamUnprotector(KEY)
    packets = [tx.protect(rtp(s)) for s in range(10, 20)]
    assert all(len(p) == len(rtp(0)) + 10 for p in packets)
    for s in (12, 10, 11, 19, 13):  # reordering inside the window is fine
        assert rx.unprotect(packets[s - 10]) == rtp(s)
    with pytest.raises(ReplayError):
        rx.unprotect(packets[0])


def test_flipped_bits_fail_authentication_and_leave_state_alone() -> None:
    tx, rx = StreamProtector(KEY), StreamUnprotector(KEY)
    good = tx.protect(rtp(1))
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x04
        with pytest.raises((AuthError, MalformedError)):  # a flipped version bit is not SRTP at all
            rx.unprotect(bytes(bad))
    assert rx.unprotect(good) == rtp(1)


def test_wrong_key_fails_authentication() -> None:
    packet = StreamProtector(KEY).protect(rtp(1))
    with pytest.raises(AuthError):
        StreamUnprotector(bytes(30)).unprotect(packet)


def test_protect_each_packet_once() -> None:
    tx = StreamProtector(KEY)
    tx.protect(rtp(7))
    with pytest.raises(LocalProtocolError):
        tx.protect(rtp(7, b"other payload"))


def test_specific_ssrc_refuses_others() -> None:
    tx = StreamProtector(KEY)
    rx = StreamUnprotector(KEY, ssrc=SSRC)
    assert rx.unprotect(tx.protect(rtp(1))) == rtp(1)
    with pytest.raises(UnknownKeyError):
        rx.unprotect(tx.protect(rtp(1, ssrc=SSRC + 1)))


def test_srtcp_round_trip_replay_and_tamper() -> None:
    tx, rx = StreamProtector(KEY), StreamUnprotector(KEY)
    plain = build_rtcp([ReceiverReport(9), GenericNack(9, SSRC, (5, 6, 9))])
    sr = build_rtcp([SenderReport(SSRC, 1 << 63, 1, 2, 3)])
    protected = tx.protect_rtcp(plain)
    assert len(protected) == len(plain) + 14
    assert parse_rtcp(rx.unprotect_rtcp(protected)) == parse_rtcp(plain)
    assert rx.unprotect_rtcp(tx.protect_rtcp(sr)) == sr
    with pytest.raises(ReplayError):
        rx.unprotect_rtcp(protected)
    bad = bytearray(tx.protect_rtcp(sr))
    bad[12] ^= 1
    with pytest.raises(AuthError):
        rx.unprotect_rtcp(bytes(bad))
    with pytest.raises(AuthError):
        StreamUnprotector(bytes(30)).unprotect_rtcp(tx.protect_rtcp(sr))


def test_long_stream_across_the_sequence_wrap() -> None:
    """70 000 packets from 65 000: the rollover counter increments at 65535 -> 0 on both sides."""
    tx, rx = StreamProtector(KEY), StreamUnprotector(KEY)
    rng = random.Random(1)
    start = 65_000
    window: list[tuple[int, bytes]] = []
    for n in range(start, start + 70_000):
        window.append((n, tx.protect(rtp(n))))
        if len(window) == 8:
            rng.shuffle(window)  # light reordering, within the replay window
            for m, packet in window:
                assert parse_rtp(rx.unprotect(packet)).sequence == m & 0xFFFF
            window.clear()
    for m, packet in window:
        assert parse_rtp(rx.unprotect(packet)).sequence == m & 0xFFFF


def test_input_checks() -> None:
    rx = StreamUnprotector(KEY)
    with pytest.raises(TruncatedError):
        rx.unprotect(rtp(1)[:21])
    with pytest.raises(MalformedError):
        rx.unprotect(b"\x40" + bytes(40))
    with pytest.raises(OversizeError):
        rx.unprotect(b"\x80" + bytes(1200))
    with pytest.raises(TruncatedError):
        rx.unprotect_rtcp(b"\x80\xc8" + bytes(19))
    with pytest.raises(LocalProtocolError):
        StreamProtector(bytes(29))
    with pytest.raises(LocalProtocolError):
        StreamUnprotector(KEY, ssrc=2**32)
    with pytest.raises(LocalProtocolError):
        StreamProtector(KEY).protect(b"\x80" + bytes(1195))
    with pytest.raises(LocalProtocolError):
        StreamProtector(KEY).protect(b"\x00" + bytes(20))
    assert split_key(KEY) == (KEY[:16], KEY[16:])


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_remote_errors(data: bytes) -> None:
    rx = StreamUnprotector(KEY)
    for unprotect in (rx.unprotect, rx.unprotect_rtcp):
        with contextlib.suppress(RemoteProtocolError):
            unprotect(bytes([0x80 | (data[:1] or b"\0")[0] & 0x3F]) + data[1:])
