"""The device socket's receive buffer: what is asked is what the socket gets (as far as the system allows, and a
clear warning when it does not), and a burst of device datagrams that would overflow the system's default buffer
waits in it instead of being dropped (real loopback sockets)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from loa.control_plane.dataplane import DataPlane, DataPlaneSettings
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import fast_settings
from loa.streamer import service
from loa.streamer.service import RECEIVE_BUFFER, open_udp_socket, receive_buffer

BURST = 1500  # small datagrams sent at once to a socket nobody reads yet


def _rmem(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


def _linux() -> bool:
    return Path("/proc/sys/net/core/rmem_max").exists()


@pytest.mark.skipif(not _linux(), reason="the limits are Linux's sysctls")
@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024, RECEIVE_BUFFER])
def test_the_socket_gets_the_buffer_asked_for_within_the_system_s_limit(size: int) -> None:
    with open_udp_socket("127.0.0.1", 0, receive_buffer_size=size) as sock:
        got = receive_buffer(sock)
    privileged = os.geteuid() == 0  # CAP_NET_ADMIN: SO_RCVBUFFORCE passes net.core.rmem_max
    assert got == (size if privileged or size <= _rmem("rmem_max") else _rmem("rmem_max"))


@pytest.mark.skipif(not _linux(), reason="the default is Linux's sysctl")
def test_without_a_size_the_socket_keeps_the_system_default() -> None:
    with open_udp_socket("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == _rmem("rmem_default")


def _burst(receiver: socket.socket) -> int:
    """Send BURST datagrams at once to ``receiver``, then read what it kept."""
    receiver.setblocking(False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(BURST):
            sender.sendto(i.to_bytes(4, "big") * 16, receiver.getsockname())
    kept = 0
    while True:
        try:
            receiver.recv(2048)
        except BlockingIOError:
            return kept
        kept += 1


def test_a_burst_waits_in_the_buffer_instead_of_being_dropped() -> None:
    with open_udp_socket("127.0.0.1", 0, receive_buffer_size=RECEIVE_BUFFER) as sock:
        if receive_buffer(sock) < RECEIVE_BUFFER:
            pytest.skip(f"this system gives {receive_buffer(sock)} bytes, not {RECEIVE_BUFFER} (no CAP_NET_ADMIN)")
        assert _burst(sock) == BURST
    if _linux() and _rmem("rmem_default") <= 256 * 1024:  # Linux's usual default: the same burst overflows it
        with open_udp_socket("127.0.0.1", 0) as sock:
            assert _burst(sock) < BURST


def test_loa_serve_warns_with_the_remedy_when_the_system_gives_less(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "_SO_RCVBUFFORCE", None)  # as for a process without CAP_NET_ADMIN
    too_much = 64 * _rmem("rmem_max") if _linux() else 1 << 30
    cp = ControlPlane(fast_settings(tmp_path))
    try:
        plane = DataPlane(cp, DataPlaneSettings(udp=("127.0.0.1", 0), receive_buffer=too_much))
        with caplog.at_level(logging.WARNING), plane.open_socket() as sock:
            got = receive_buffer(sock)
    finally:
        cp.close()
    assert got < too_much
    assert f"net.core.rmem_max={too_much}" in caplog.text
    assert f"is {got} bytes" in caplog.text
