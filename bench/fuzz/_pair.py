"""The fixed keys of ``spec/vectors/session.json`` and connections built from them, for the session targets."""

from __future__ import annotations

import random
from collections.abc import Callable

from loa.bench.fuzz._common import vectors
from loa.protocol.connection import DeviceConnection, ServerConnection
from loa.protocol.noise import x25519_public

__all__ = ["ADDRESS", "DEVICE_PUB", "DEVICE_STATIC", "SERVER_PUB", "SERVER_STATIC", "device", "established", "server"]

_CONTEXT = vectors("session")["context"]
SERVER_STATIC = bytes.fromhex(_CONTEXT["server_static_private"])
DEVICE_STATIC = bytes.fromhex(_CONTEXT["device_static_private"])
SERVER_PUB = x25519_public(SERVER_STATIC)
DEVICE_PUB = x25519_public(DEVICE_STATIC)
ADDRESS = ("192.0.2.10", 40000)


def _random(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def server(seed: int = 1, *, enrolled: bool = True) -> ServerConnection:
    return ServerConnection(static_private=SERVER_STATIC, is_enrolled=lambda pub: enrolled and pub == DEVICE_PUB,
                            boot=7, random_bytes=_random(seed))


def device(seed: int = 2) -> DeviceConnection:
    return DeviceConnection(static_private=DEVICE_STATIC, server_public=SERVER_PUB, boot=9, random_bytes=_random(seed),
                            timestamp_source=lambda now: 1_767_225_600_000_000_000 + int(now * 1e9))


def established(now: float = 0.0) -> tuple[DeviceConnection, ServerConnection]:
    """A device and a server with a confirmed session between them (the server has seen a transport message)."""
    dev, srv = device(), server()
    dev.connect(now)
    for _ in range(3):
        for data in dev.datagrams_to_send():
            srv.receive_datagram(data, ADDRESS, now)
        for data, _ in srv.datagrams_to_send():
            dev.receive_datagram(data, now)
    if not (dev.connected and srv.is_connected(DEVICE_PUB)):
        raise AssertionError("the vector keys did not give a session")
    return dev, srv
