"""`loa send`'s pacing loop under a virtual clock: due times, late frames, sender reports, BYE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loa.protocol.rtcp import Bye, SenderReport, SourceDescription, parse_rtcp
from loa.protocol.rtp import parse_rtp
from loa.protocol.srtp import StreamProtector, StreamUnprotector
from loa.streamer.packetizer import Packetizer
from loa.streamer.send import SendStatistics, parse_destination, stream, write_file_atomically

FRAME_NS = 20_000_000


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000
        self.sleeps: list[float] = []

    def monotonic_ns(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * 1e9) + 150_000  # every sleep oversleeps by 150 us

    def server_time(self) -> int:
        return 1_700_000_000_000_000_000 + self.now


Sent = list[tuple[int, bytes]]


def run(clock: VirtualClock, payloads: Iterator[bytes], key: bytes | None = None) -> tuple[Sent, Sent, SendStatistics]:
    rtp: Sent = []
    rtcp: Sent = []
    stats = stream(
        payloads,
        packetizer=Packetizer(7, initial_seq=100, initial_ts=5000, server_time=clock.server_time),
        protector=StreamProtector(key) if key else None,
        send_rtp=lambda d: rtp.append((clock.now, d)),
        send_rtcp=lambda d: rtcp.append((clock.now, d)),
        cname=b"loa-test",
        monotonic_ns=clock.monotonic_ns,
        sleep=clock.sleep,
    )
    return rtp, rtcp, stats


def test_frames_leave_on_schedule_without_drift() -> None:
    clock = VirtualClock()
    start = clock.now
    rtp, rtcp, stats = run(clock, iter([b"\xfc"] * 150))
    times = [t for t, _ in rtp]
    for k, t in enumerate(times):
        assert 0 <= t - (start + k * FRAME_NS) <= 200_000  # oversleep never accumulates
    assert stats.packets == 150
    assert stats.late == 0
    sr_times = [t for t, d in rtcp]
    assert sr_times[0] == times[0]  # right after the first packet
    assert len(rtcp) == 4  # at 0 s, 1 s and 2 s of a 3 s stream, then the closing BYE
    first = parse_rtcp(rtcp[0][1])
    assert isinstance(first[0], SenderReport)
    assert isinstance(first[1], SourceDescription)
    assert first[1].chunks[0].items == ((1, b"loa-test"),)
    assert isinstance(parse_rtcp(rtcp[-1][1])[-1], Bye)


def test_a_stall_counts_late_frames_and_the_schedule_catches_up() -> None:
    clock = VirtualClock()
    start = clock.now

    def payloads() -> Iterator[bytes]:
        for k in range(100):
            if k == 10:
                clock.now += 95_000_000  # the encoder stalls for 95 ms
            yield b"\xfc"

    rtp, _, stats = run(clock, payloads())
    assert stats.late == 4  # frames 10..13 were due before the stall ended
    times = [t for t, _ in rtp]
    assert all(0 <= times[k] - (start + k * FRAME_NS) <= 200_000 for k in range(15, 100))


def test_srtp_stream_and_bye_after_a_send_error() -> None:
    key = bytes(range(30))
    clock = VirtualClock()
    sent: list[bytes] = []
    rtcp: list[bytes] = []

    def send_rtp(data: bytes) -> None:
        if len(sent) == 5:
            raise OSError("network unreachable")
        sent.append(data)

    with pytest.raises(OSError, match="unreachable"):
        stream(
            iter([b"\xfc"] * 20),
            packetizer=Packetizer(7, initial_seq=1, initial_ts=1, server_time=clock.server_time),
            protector=StreamProtector(key),
            send_rtp=send_rtp,
            send_rtcp=rtcp.append,
            cname=b"x",
            monotonic_ns=clock.monotonic_ns,
            sleep=clock.sleep,
        )
    rx = StreamUnprotector(key)
    assert [parse_rtp(rx.unprotect(p)).sequence for p in sent] == [1, 2, 3, 4, 5]
    assert isinstance(parse_rtcp(rx.unprotect_rtcp(rtcp[-1]))[-1], Bye)


def test_destinations() -> None:
    d = parse_destination("127.0.0.1:5004")
    assert (d.address, d.port, d.multicast) == ("127.0.0.1", 5004, False)
    assert parse_destination("[::1]:6000").address == "::1"
    assert parse_destination("239.1.2.3:5004").multicast


def test_atomic_sdp_write_permissions(tmp_path: Path) -> None:
    write_file_atomically(str(tmp_path / "a.sdp"), "v=0\r\n", private=True)
    assert (tmp_path / "a.sdp").stat().st_mode & 0o777 == 0o600
    write_file_atomically(str(tmp_path / "a.sdp"), "v=0\r\n")
    assert (tmp_path / "a.sdp").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.sdp"]
