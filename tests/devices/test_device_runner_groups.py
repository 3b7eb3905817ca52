"""Where the reference device joins multicast groups, and which groups it refuses (PROTOCOL.md section 5.7). The
joining itself, on real sockets, is in tests/e2e/test_multicast_e2e.py."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.devices.runner import ANY_INTERFACE, _open_group, group_interface


@pytest.mark.parametrize(("bind_host", "interface"), [
    ("127.0.0.1", "127.0.0.1"),
    ("192.0.2.7", "192.0.2.7"),
    ("0.0.0.0", ANY_INTERFACE),  # a wildcard bind: the routing table picks the interface
    (None, ANY_INTERFACE),
    ("::1", ANY_INTERFACE),
    ("::", ANY_INTERFACE),
    ("::ffff:127.0.0.1", ANY_INTERFACE),
    ("localhost", ANY_INTERFACE),
    ("", ANY_INTERFACE),
])
def test_groups_are_joined_on_the_interface_of_a_specific_ipv4_bind(bind_host: str | None, interface: str) -> None:
    assert group_interface(bind_host) == interface


@pytest.mark.parametrize("group", [
    "[ff15::1]:5004",  # IPv6: not joined by the reference device
    "10.0.0.1:5004",  # not a multicast address
    "239.255.1.1:0",
    "239.255.1.1:65536",
    "239.255.1.1:-1",
    "239.255.1.1:port",
    "239.255.1.1",
    "239.255.1.256:5004",
    "",
])
def test_a_group_that_is_not_an_ipv4_multicast_address_and_port_is_refused(group: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ by cause; the type is the contract
        _open_group(group, "127.0.0.1")


@given(st.text(max_size=40))
def test_any_text_as_a_group_is_refused_with_value_error_or_opened(text: str) -> None:
    """Whatever a server names as a group, joining it raises ValueError or OSError, or gives a socket."""
    try:
        sock = _open_group(text, "127.0.0.1")
    except (ValueError, OSError):
        return
    assert isinstance(sock, socket.socket)
    sock.close()
