"""Finding the server on a LAN by DNS-SD (PROTOCOL.md section 3.10): service ``_loa._udp``, TXT ``v=1`` and
``pk=<base64 of the server's static key>``.

Discovery only supplies an address: a device keeps the server key it was provisioned with, takes only a service
whose ``pk`` equals that key, and the handshake checks the key again. :func:`discover_server` browses for up
to ``timeout`` seconds and returns the first matching service's address; :class:`DiscoveryError` says what was
found instead when nothing matches.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["SERVICE_TYPE", "DiscoveryError", "discover_server", "service_properties"]

SERVICE_TYPE = "_loa._udp.local."


class DiscoveryError(Exception):
    """No advertised server carries the provisioned key (the message names what was seen)."""


def service_properties(server_public: bytes) -> dict[str, str]:
    """The TXT properties a server advertises with its key (for servers and tests)."""
    return {"v": "1", "pk": base64.b64encode(server_public).decode("ascii")}


def _matches(properties: dict[Any, Any], server_public: bytes) -> str | None:
    """None if the TXT record names this server, else why not."""
    def text(key: str) -> str | None:
        value = properties.get(key.encode(), properties.get(key))
        return value.decode("ascii", "replace") if isinstance(value, bytes) else value

    if text("v") != "1":
        return f"version {text('v')!r}"
    pk = text("pk")
    try:
        advertised = base64.b64decode(pk or "", validate=True)
    except (binascii.Error, ValueError):
        return "a malformed key"
    return None if advertised == server_public else "another server key"


def discover_server(server_public: bytes, *, timeout: float = 5.0,
                    interfaces: Sequence[str] | None = None) -> tuple[str, int]:
    """``(host, port)`` of a server advertising ``server_public``; :class:`DiscoveryError` after ``timeout``."""
    from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceListener, Zeroconf

    names: list[str] = []
    seen = threading.Event()

    class _Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            names.append(name)
            seen.set()

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            self.add_service(zc, type_, name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            return None

    try:
        zc = Zeroconf(interfaces=list(interfaces) if interfaces is not None else InterfaceChoice.All)
    except OSError as exc:
        raise DiscoveryError(f"cannot use multicast DNS here: {exc.strerror or exc}") from None
    rejected: list[str] = []
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, _Listener())
        deadline = time.monotonic() + timeout
        checked = 0
        while time.monotonic() < deadline:
            seen.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            seen.clear()
            while checked < len(names):
                name = names[checked]
                checked += 1
                info = zc.get_service_info(SERVICE_TYPE, name, timeout=1000)
                if info is None:
                    continue
                why = _matches(dict(info.properties), server_public)
                addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
                if why is None and addresses and info.port:
                    return addresses[0], int(info.port)
                rejected.append(f"{name} ({why or 'no address'})")
        with contextlib.suppress(Exception):
            browser.cancel()
    finally:
        zc.close()
    if rejected:
        raise DiscoveryError(f"no _loa._udp server with the provisioned key; saw {', '.join(rejected)}")
    raise DiscoveryError(f"no _loa._udp server answered within {timeout:g} s")
