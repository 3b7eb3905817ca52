"""The server's socket filter in a real kernel (Linux): a UDP socket on loopback receives exactly the datagrams
:func:`~loa.streamer.sockfilter.accepts` accepts, the kernel counts the rest, IPv4 and dual-stack IPv6 alike; the
service attaches it and reports the kernel's count."""

from __future__ import annotations

import random
import socket
import sys

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.streamer import sockfilter
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, open_udp_socket
from loa.streamer.zones import Zone, ZoneTree

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_ATTACH_FILTER is Linux's"),
]

SENTINEL = b"\x04\x01\x00\x00" + b"sentinel" + bytes(24)


class _Target:
    """A receiving socket and the address a sender reaches it at."""

    def __init__(self, receiver: socket.socket, address: tuple[str, int]) -> None:
        self.receiver, self.address = receiver, address

    def delivered(self, sender: socket.socket, payload: bytes) -> bool:
        """Send ``payload`` then a sentinel the filter passes; loopback keeps their order, so ``payload`` was
        delivered if and only if it is read before the sentinel."""
        sender.sendto(payload, self.address)
        sender.sendto(SENTINEL, self.address)
        first = self.receiver.recv(2048)
        if first == SENTINEL:
            return False
        assert first == payload
        assert self.receiver.recv(2048) == SENTINEL
        return True


def boundary_payloads() -> list[bytes]:
    rng = random.Random(3)
    out = [b""]
    for kind in range(256):
        for size in (1, 4, 31, 32, 148, 1200, 1201):
            head = bytes((kind, rng.choice((1, 1, 0)), 0, rng.choice((0, 0, 2))))
            out.append((head + rng.randbytes(max(0, size - 4)))[:size])
    for size in (147, 148, 149):
        out.append(b"\x01\x01\0\0" + rng.randbytes(size - 4))
    return out


@pytest.mark.parametrize("bind", ["127.0.0.1", "::"])  # "::" is dual-stack: IPv4 arrives as ::ffff:127.0.0.1
def test_the_kernel_passes_what_the_reference_accepts_and_counts_the_rest(bind: str) -> None:
    if bind == "::" and not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender, open_udp_socket(bind, 0) as receiver:
        receiver.setblocking(True)
        receiver.settimeout(5.0)
        target = _Target(receiver, ("127.0.0.1", receiver.getsockname()[1]))
        assert sockfilter.attach(receiver)
        assert sockfilter.kernel_drops(receiver) == 0
        refused = 0
        for payload in boundary_payloads():
            assert target.delivered(sender, payload) == sockfilter.accepts(payload), payload[:8].hex()
            refused += not sockfilter.accepts(payload)
        assert refused > 1000
        assert sockfilter.kernel_drops(receiver) == refused
        assert sockfilter.detach(receiver)
        assert target.delivered(sender, b"\xff" * 10)  # without the filter everything arrives


@given(st.binary(max_size=1300))
@settings(max_examples=300, deadline=None)
def test_random_datagrams_pass_as_the_reference_says(payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender, open_udp_socket("127.0.0.1", 0) as receiver:
        receiver.setblocking(True)
        receiver.settimeout(5.0)
        assert sockfilter.attach(receiver)
        assert _Target(receiver, receiver.getsockname()[:2]).delivered(sender, payload) == sockfilter.accepts(payload)


def test_a_filter_needs_a_datagram_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
        assert not sockfilter.attach(stream)


def test_the_service_attaches_it_and_reports_what_the_kernel_dropped() -> None:
    async def main() -> None:
        core = StreamerCore(static_private=bytes(range(32)), zones=ZoneTree([Zone("Z", "z")]))
        service = StreamerService(core, open_udp_socket("127.0.0.1", 0))
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            with anyio.fail_after(10):
                while not service.filtered:
                    await anyio.sleep(0.01)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for _ in range(50):
                    sender.sendto(b"\x03\x01\x00\x00" + bytes(48), service.address)  # a cookie reply: never taken
                sender.sendto(b"\x04\x01\x00\x00" + bytes(40), service.address)  # a transport: taken, unknown
                with anyio.fail_after(10):
                    while core.statistics().datagrams_in < 1:
                        await anyio.sleep(0.01)
            stats = service.statistics()
            assert stats.kernel_drops == 50
            assert stats.received == 1
            assert core.statistics().datagrams_in == 1
            assert set(core.statistics().drops) == {"UnknownKeyError"}
            service.stop()
        service.sock.close()

    anyio.run(main)
