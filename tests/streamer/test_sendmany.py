"""DatagramSender: different datagrams to different addresses in batches, on real loopback sockets."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from loa.streamer.sendmany import MAX_BATCH, DatagramSender


@pytest.fixture
def receivers() -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        socks = []
        for _ in range(40):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            socks.append(sock)
        yield socks


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


BACKENDS = ["sendmmsg", "sendto"] if sys.platform.startswith("linux") else ["sendto"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_datagram_reaches_its_own_address_in_order(receivers: list[socket.socket], backend: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setblocking(False)
        sender = DatagramSender(tx, backend=backend)  # type: ignore[arg-type]
        # more than one batch, three rounds over the receivers, sizes 1..1199 bytes
        items = [(bytes([i % 251]) * (1 + (i * 37) % 1199), receivers[i % len(receivers)].getsockname())
                 for i in range(MAX_BATCH + 77)]
        assert sender.send(items) == len(items)
        assert (sender.sent, sender.failed, sender.blocked_by) == (len(items), 0, 0)
        for r, sock in enumerate(receivers):
            assert _drain(sock) == [data for data, address in items if address == sock.getsockname()], r


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bad_address_is_skipped_and_counted(receivers: list[socket.socket], backend: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setblocking(False)
        sender = DatagramSender(tx, backend=backend)  # type: ignore[arg-type]
        good = receivers[0].getsockname()
        items = [(b"a", good), (b"b", ("not an address", 9)), (b"c", ("::1", 9)), (b"d", ("127.0.0.1", 0)),
                 (b"e", good)]
        assert sender.send(items) == len(items)
        assert _drain(receivers[0]) == [b"a", b"e"]
        assert sender.sent == 2
        assert sender.failed == 3


def test_an_ipv6_socket_reaches_ipv4_addresses(receivers: list[socket.socket]) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        tx.setblocking(False)
        sender = DatagramSender(tx)
        assert sender.send([(b"mapped", receivers[1].getsockname())]) == 1
        assert _drain(receivers[1]) == [b"mapped"]


def test_refuses_sockets_it_cannot_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocking, pytest.raises(ValueError, match="non-blocking"):
        DatagramSender(blocking)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
        stream.setblocking(False)
        with pytest.raises(ValueError, match="UDP"):
            DatagramSender(stream)
