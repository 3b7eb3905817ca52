"""An in-process UDP impairment proxy on loopback for the end-to-end tests: random loss, and address changes.

:class:`LossProxy` sits between devices and the server. Each device gets its own :class:`Leg`: a *front* socket
the device sends to (the device is configured with the front address as its server) and a *back* socket the
proxy uses towards the server, so the server sees one distinct address per device. Every datagram is dropped
with probability ``loss`` in its direction, from a :class:`random.Random` seeded per leg and direction, so a run
is reproducible for one seed whatever the other legs do; what survives is forwarded at once (nothing is
queued). :meth:`Leg.move` gives a leg a new back socket (a new source port): to the server, the device changed
address, as a NAT rebinding or a new DHCP lease would make it.

Failure semantics: a datagram that cannot be forwarded (an ICMP error, a closed peer) is dropped and counted;
the loops run until the proxy's scope is cancelled by :meth:`LossProxy.close`, which closes every socket.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from _site import FRAME

if TYPE_CHECKING:
    from loa.devices.playout import PlayoutEntry

Address = tuple[str, int]
HOST = "127.0.0.1"


@dataclass(slots=True)
class Counts:
    forwarded: int = 0
    dropped: int = 0
    errors: int = 0


@dataclass
class Leg:
    """One device's path through the proxy (see the module docstring)."""

    proxy: LossProxy
    front: anyio.abc.UDPSocket
    back: anyio.abc.UDPSocket
    up_rng: random.Random
    down_rng: random.Random
    device: Address | None = None
    up: Counts = field(default_factory=Counts)  # device -> server
    down: Counts = field(default_factory=Counts)  # server -> device
    moves: int = 0
    back_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    front_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    @property
    def address(self) -> Address:
        """Where the device sends (its server address)."""
        host, port = self.front.extra(anyio.abc.SocketAttribute.local_address)[:2]
        return str(host), int(port)

    @property
    def server_side(self) -> Address:
        """The address the server sees for this device now."""
        host, port = self.back.extra(anyio.abc.SocketAttribute.local_address)[:2]
        return str(host), int(port)

    async def move(self) -> Address:
        """Forward from a new source port from now on (the old back socket is closed); returns the new one."""
        new = await anyio.create_udp_socket(local_host=HOST)
        old, old_scope = self.back, self.back_scope
        self.back, self.back_scope = new, anyio.CancelScope()
        self.moves += 1
        self.proxy._start_back(self)
        old_scope.cancel()
        await old.aclose()
        return self.server_side


class LossProxy:
    """See the module docstring. Its loops run in ``tg``; one :meth:`add_leg` per device."""

    def __init__(self, tg: anyio.abc.TaskGroup, server: Address, loss: float, seed: int) -> None:
        self._tg = tg
        self.server = server
        self.loss = loss
        self.seed = seed
        self.legs: list[Leg] = []
        self._closed = False

    async def add_leg(self) -> Leg:
        """A new leg (one per device); its :attr:`Leg.address` is what the device uses as server address."""
        index = len(self.legs)
        front = await anyio.create_udp_socket(local_host=HOST)
        back = await anyio.create_udp_socket(local_host=HOST)
        leg = Leg(self, front, back, random.Random(f"{self.seed}/{index}/up"),
                  random.Random(f"{self.seed}/{index}/down"))
        self.legs.append(leg)
        self._tg.start_soon(self._front_loop, leg)
        self._start_back(leg)
        return leg

    def _start_back(self, leg: Leg) -> None:
        self._tg.start_soon(self._back_loop, leg, leg.back, leg.back_scope)

    async def _front_loop(self, leg: Leg) -> None:
        """Device -> server."""
        with leg.front_scope, contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            while True:
                try:
                    data, source = await leg.front.receive()
                except OSError:
                    leg.up.errors += 1
                    continue
                leg.device = (str(source[0]), int(source[1]))
                if leg.up_rng.random() < self.loss:
                    leg.up.dropped += 1
                    continue
                try:
                    await leg.back.sendto(data, *self.server)
                    leg.up.forwarded += 1
                except (OSError, anyio.ClosedResourceError):  # the leg is moving: the datagram is lost
                    leg.up.errors += 1

    async def _back_loop(self, leg: Leg, sock: anyio.abc.UDPSocket, scope: anyio.CancelScope) -> None:
        """Server -> device, on one back socket until it is replaced."""
        with scope, contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            while True:
                try:
                    data, _ = await sock.receive()
                except OSError:
                    leg.down.errors += 1
                    continue
                if leg.down_rng.random() < self.loss:
                    leg.down.dropped += 1
                    continue
                if leg.device is None:
                    leg.down.errors += 1
                    continue
                try:
                    await leg.front.sendto(data, *leg.device)
                    leg.down.forwarded += 1
                except OSError:
                    leg.down.errors += 1

    def totals(self) -> tuple[Counts, Counts]:
        """(device -> server, server -> device) over all legs."""
        up, down = Counts(), Counts()
        for leg in self.legs:
            for total, part in ((up, leg.up), (down, leg.down)):
                total.forwarded += part.forwarded
                total.dropped += part.dropped
                total.errors += part.errors
        return up, down

    async def aclose(self) -> None:
        """Stop forwarding and close every socket (the task group's loops end)."""
        if self._closed:
            return
        self._closed = True
        for leg in self.legs:
            leg.back_scope.cancel()
            leg.front_scope.cancel()
            await leg.front.aclose()
            await leg.back.aclose()


def frame_counts(entries: list[PlayoutEntry]) -> Counter[str]:
    """Frames by kind, plus ``missing``: slots between the first and last frame that never played."""
    counts = Counter(e.kind for e in entries)
    span = ((entries[-1].rtp_ts - entries[0].rtp_ts) % 2**32) // FRAME + 1
    counts["missing"] = span - len(entries)
    counts["slots"] = span
    return counts
