"""The packetizer: marker and rapid-sync rules (sections 5.1-5.2), timestamps, sender reports."""

from __future__ import annotations

import itertools
import random

import pytest

from loa.protocol.rtp import RAPID_SYNC_PACKETS, parse_rtp
from loa.protocol.rtptime import ns_to_ntp64, ntp64_to_ns, seq_diff, ts_diff
from loa.streamer.packetizer import Packetizer

T0 = 1_700_000_000_123_456_789


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make(clock: FakeClock, seq: int = 65530, ts: int = 2**32 - 1920) -> Packetizer:
    return Packetizer(0xABCDEF01, initial_seq=seq, initial_ts=ts, server_time=clock)


def test_first_packets_marker_and_rapid_sync() -> None:
    clock = FakeClock()
    p = make(clock)
    packets = [parse_rtp(p.packetize(b"\xfc\x01\x02")) for _ in range(8)]
    assert [pk.marker for pk in packets] == [True] + [False] * 7
    assert [pk.ntp64 is not None for pk in packets] == [True] * RAPID_SYNC_PACKETS + [False] * 3
    assert all(pk.payload_type == 111 and pk.ssrc == 0xABCDEF01 for pk in packets)
    assert [pk.sequence for pk in packets] == [65530, 65531, 65532, 65533, 65534, 65535, 0, 1]
    assert [ts_diff(pk.timestamp, packets[0].timestamp) for pk in packets] == [960 * i for i in range(8)]
    assert packets[6].timestamp == 2**32 - 1920 + 6 * 960 - 2**32  # wrapped
    for i, pk in enumerate(packets[:RAPID_SYNC_PACKETS]):
        assert pk.ntp64 == ns_to_ntp64(T0 + i * 20_000_000)


def test_frame_duration_may_change() -> None:
    p = make(FakeClock())
    durations = [480, 960, 1920, 2880, 960]
    packets = [parse_rtp(p.packetize(b"x", samples)) for samples in durations]
    steps = [ts_diff(b.timestamp, a.timestamp) for a, b in itertools.pairwise(packets)]
    assert steps == durations[:-1]
    assert ntp64_to_ns(packets[4].ntp64 or 0) == T0 + sum(durations[:4]) * 1_000_000_000 // 48_000


def test_gap_sets_marker_restarts_rapid_sync_and_keeps_the_timeline() -> None:
    clock = FakeClock()
    p = make(clock)
    first = [parse_rtp(p.packetize(b"x")) for _ in range(10)]
    clock.now = T0 + 5_000_000_000  # resumed 5 s after the first packet; 10 frames = 0.2 s were sent
    p.mark_gap()
    after = [parse_rtp(p.packetize(b"y")) for _ in range(7)]
    assert [pk.marker for pk in after] == [True] + [False] * 6
    assert [pk.ntp64 is not None for pk in after] == [True] * 5 + [False] * 2
    assert seq_diff(after[0].sequence, first[-1].sequence) == 1
    assert ts_diff(after[0].timestamp, first[0].timestamp) == 5 * 48_000
    assert ntp64_to_ns(after[0].ntp64 or 0) == clock.now


def test_gap_before_first_packet_and_backwards_gap() -> None:
    clock = FakeClock()
    p = make(clock)
    p.mark_gap()
    a = parse_rtp(p.packetize(b"x"))
    p.mark_gap(at_ns=T0 - 10**9)  # earlier than the running timeline: timestamps never go back
    b = parse_rtp(p.packetize(b"x"))
    assert a.marker
    assert b.marker
    assert ts_diff(b.timestamp, a.timestamp) == 960


def test_sender_report_matches_the_extension_timeline() -> None:
    clock = FakeClock()
    p = make(clock)
    with pytest.raises(ValueError, match="no packet"):
        p.sender_report()
    packets = [parse_rtp(p.packetize(b"abcd")) for _ in range(50)]
    sr = p.sender_report(T0 + 1_000_000_000 + 7)
    assert sr.ssrc == 0xABCDEF01
    assert sr.packet_count == 50
    assert sr.octet_count == 200
    assert ts_diff(sr.rtp_timestamp, packets[0].timestamp) == 48_000
    assert ntp64_to_ns(sr.ntp) == T0 + 1_000_000_000  # the exact instant of that sample
    sr2 = p.sender_report(T0 + 123_456)  # between samples: the sample at or before
    assert ts_diff(sr2.rtp_timestamp, packets[0].timestamp) == 5
    assert ntp64_to_ns(sr2.ntp) == T0 + 5 * 1_000_000_000 // 48_000


def test_random_start_uses_the_injected_rng() -> None:
    a = Packetizer.random_start(random.Random(7), FakeClock())
    b = Packetizer.random_start(random.Random(7), FakeClock())
    assert (a.ssrc, a.next_sequence, a.next_timestamp) == (b.ssrc, b.next_sequence, b.next_timestamp)
    c = Packetizer.random_start(random.Random(8), FakeClock(), ssrc=5)
    assert c.ssrc == 5


def test_bad_frames_change_nothing() -> None:
    p = make(FakeClock())
    with pytest.raises(ValueError, match="payload"):
        p.packetize(b"")
    with pytest.raises(ValueError, match="payload"):
        p.packetize(bytes(1200))
    with pytest.raises(ValueError, match="sample"):
        p.packetize(b"x", 0)
    assert parse_rtp(p.packetize(b"x")).sequence == 65530
    buf = bytearray(1200)
    n = p.packetize_into(buf, b"zz")
    assert parse_rtp(buf[:n]).payload == b"zz"
