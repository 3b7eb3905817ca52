"""DNS-SD advertisement of a streamer on the LAN (PROTOCOL.md section 3.10): ``_loa._udp`` with TXT ``v=1`` and
``pk=<base64 of the server's public key>``.

Discovery is a convenience: a device still compares the advertised key with its provisioned one. So is this
module: a network without multicast DNS (no multicast route, a container, a firewall) makes :meth:`start`
return the reason it could not advertise, and the streamer runs on without it. The zeroconf calls block for a
second or two (probing, goodbyes); the service runs them in a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

__all__ = ["SERVICE_TYPE", "Advertiser", "service_properties"]

SERVICE_TYPE = "_loa._udp.local."


def service_properties(public_key: bytes) -> dict[str, str]:
    """The TXT record: protocol version and the server's static public key."""
    return {"v": "1", "pk": base64.b64encode(public_key).decode("ascii")}


def _primary_address(family: int) -> str | None:
    """The address this host would use towards the outside (no packet is sent)."""
    probe = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return None


class Advertiser:
    """Registers one ``_loa._udp`` service for a streamer listening on ``host``:``port``."""

    def __init__(self, *, name: str, host: str, port: int, public_key: bytes) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.public_key = public_key
        self._zeroconf: Zeroconf | None = None
        self._info: ServiceInfo | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def addresses(self) -> list[str]:
        """What to put in the A/AAAA records: the bound address, or the primary one for a wildcard bind."""
        ip = ipaddress.ip_address(self.host)
        if not ip.is_unspecified:
            return [str(ip)]
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        found = [a for a in (_primary_address(socket.AF_INET), _primary_address(family)) if a]
        return list(dict.fromkeys(found)) or ["127.0.0.1"]

    def start(self) -> str | None:
        """Advertise (blocking); returns None on success, or why it could not (then nothing is left running)."""
        from zeroconf import InterfaceChoice, ServiceInfo, Zeroconf

        addresses = self.addresses()
        instance = self.name.encode()[:63].decode(errors="ignore") or "loa"
        hostname = f"loa-{self.public_key[:4].hex()}.local."
        try:
            ip = ipaddress.ip_address(self.host)
            interfaces = InterfaceChoice.All if ip.is_unspecified else [self.host]
            zeroconf = Zeroconf(interfaces=interfaces)
        except Exception as exc:  # noqa: BLE001 - any failure of the mDNS stack only means "no discovery"
            return f"multicast DNS is unavailable: {exc or type(exc).__name__}"
        try:
            info = ServiceInfo(
                SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=self.port, server=hostname,
                addresses=[ipaddress.ip_address(a).packed for a in addresses],
                properties=service_properties(self.public_key),
            )
            zeroconf.register_service(info, allow_name_change=True)
        except Exception as exc:  # noqa: BLE001 - as above; the stack is closed again
            zeroconf.close()
            return f"cannot advertise {SERVICE_TYPE}: {exc or type(exc).__name__}"
        with self._lock:
            self._zeroconf, self._info = zeroconf, info
            stopped = self._stopped
        if stopped:  # stop() ran while this was still probing (in another thread): withdraw at once
            self.stop()
        return None

    def stop(self) -> None:
        """Withdraw the advertisement (blocking). If :meth:`start` is still running in another thread, it
        withdraws the advertisement itself when it finishes. Safe to call more than once."""
        with self._lock:
            self._stopped = True
            zeroconf, info = self._zeroconf, self._info
            self._zeroconf = self._info = None
        if zeroconf is None or info is None:
            return
        try:
            with contextlib.suppress(Exception):  # leaving: nothing more to do if the goodbye cannot be sent
                zeroconf.unregister_service(info)
        finally:
            zeroconf.close()
