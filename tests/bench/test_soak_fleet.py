"""The soak fleet's RTP filter: the kernel program keeps what :func:`keeps` says, over real loopback sockets."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.bench._soak_fleet import RTP_HEADER, attach, keeps, program


def rtp(seq: int, *, payload_type: int = 111, marker: bool = False, size: int = 80) -> bytes:
    second = payload_type | (0x80 if marker else 0)
    return bytes([0x80, second]) + seq.to_bytes(2, "big") + bytes(range(8)) + bytes(size - RTP_HEADER)


@pytest.mark.parametrize("keep", [0, 3, 6, 100])
def test_keep_must_be_a_power_of_two(keep: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        program(keep)


def test_keeps_one_rtp_packet_in_k_and_everything_else() -> None:
    assert [seq for seq in range(40) if keeps(rtp(seq), 8)] == [0, 8, 16, 24, 32]
    assert keeps(rtp(65_535), 1)
    assert keeps(bytes([4, 1, 0, 0]) + bytes(60), 8)  # a transport datagram
    assert keeps(bytes([0x80, 200]) + bytes(30), 8)  # RTCP sender report
    assert keeps(bytes([0x81, 203, 0, 1]) + bytes(8), 8)  # RTCP BYE
    assert keeps(bytes([0x80, 111, 0, 1]), 8)  # shorter than an RTP header: the device judges it
    assert not keeps(rtp(3, marker=True), 8)


@given(st.binary(min_size=RTP_HEADER, max_size=64), st.sampled_from([1, 2, 4, 16, 1024]))
def test_what_is_not_rtp_always_passes(data: bytes, keep: int) -> None:
    is_rtp = data[0] & 0xC0 == 0x80 and not 192 <= data[1] <= 223
    if not is_rtp or keep == 1:
        assert keeps(data, keep)


@pytest.mark.e2e
def test_the_kernel_filter_matches_keeps() -> None:
    keep = 4
    datagrams = [rtp(seq) for seq in range(64)] + [rtp(seq, marker=True) for seq in range(64, 72)]
    datagrams += [bytes([4, 1, 0, 0]) + bytes(40), bytes([1, 1, 0, 0]) + bytes(144), bytes([0x80, 200]) + bytes(26),
                  bytes([0x80, 111]), b"", bytes([0x80, 230, 0, 8]) + bytes(20), bytes([0x80, 230, 0, 9]) + bytes(20)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if not attach(rx, keep):
            pytest.skip("this kernel takes no socket filters (SO_ATTACH_FILTER)")
        for data in datagrams:
            tx.sendto(data, rx.getsockname())
        rx.setblocking(False)
        received = []
        deadline = time.monotonic() + 5
        expected = [d for d in datagrams if keeps(d, keep)]
        while len(received) < len(expected) and time.monotonic() < deadline:
            try:
                received.append(rx.recv(2048))
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.05)  # anything the filter wrongly passed has arrived by now
        with pytest.raises(BlockingIOError):
            rx.recv(2048)
    assert received == expected
    assert len(expected) < len(datagrams)  # the filter did drop
