"""A deterministic fake datagram network under a virtual clock, for tests and simulations.

Like trio's ``_fake_net`` with ``MockClock(autojump_threshold=0)``: nothing here reads real time or opens a socket.
Endpoints (anything with the :class:`Endpoint` methods) are attached at addresses; :meth:`FakeNetwork.run_until`
jumps the :class:`VirtualClock` straight to the next event - the next datagram delivery or the earliest endpoint
``next_timeout()`` - so minutes of protocol time cost milliseconds. Loss, duplication, reordering and delay are
drawn from one ``random.Random(seed)``, so a run is reproducible from its seed.

:class:`DeviceNode` and :class:`ServerNode` adapt :class:`~loa.protocol.session.DeviceSession` and
:class:`~loa.protocol.session.ServerEndpoint`; layers above the session wrap those the same way.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from loa.protocol.cookie import Address
from loa.protocol.session import DeviceSession, Event, ServerEndpoint

__all__ = [
    "DeviceNode",
    "Endpoint",
    "FakeNetwork",
    "LinkConditions",
    "NetworkStatistics",
    "ServerNode",
    "VirtualClock",
]


class Endpoint(Protocol):
    """What the network needs from a participant. ``outgoing`` drains ``(datagram, destination)`` pairs."""

    def receive(self, data: bytes, src: Address, now: float) -> None: ...

    def outgoing(self) -> list[tuple[bytes, Address]]: ...

    def next_timeout(self) -> float | None: ...

    def handle_timeout(self, now: float) -> None: ...


class VirtualClock:
    """Seconds of virtual time; only moves forward, and only when told to."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    @property
    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        return self._now

    def jump_to(self, when: float) -> None:
        """Move to ``when``; a time in the past leaves the clock where it is."""
        self._now = max(self._now, when)

    def advance(self, seconds: float) -> None:
        self.jump_to(self._now + seconds)


@dataclass(frozen=True, slots=True)
class LinkConditions:
    """How one direction treats each datagram: lost with ``loss``; otherwise delivered after a delay uniform in
    ``delay``, plus up to ``reorder_delay`` more with probability ``reorder``; a second copy (its own delay) with
    probability ``duplicate``."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: tuple[float, float] = (0.005, 0.02)
    reorder_delay: float = 0.1


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    sent: int
    delivered: int
    lost: int
    duplicated: int
    undeliverable: int


@dataclass(frozen=True, slots=True)
class _Outage:
    start: float
    end: float
    src: Address | None
    dst: Address | None


@dataclass(order=True, slots=True)
class _InFlight:
    at: float
    seq: int
    src: Address = field(compare=False)
    dst: Address = field(compare=False)
    data: bytes = field(compare=False)


class FakeNetwork:
    """A seeded datagram network between endpoints attached at addresses.

    ``set_link(src, dst, conditions)`` overrides the default conditions for one direction; ``None`` for ``src``
    or ``dst`` matches any address (an exact pair wins over ``(src, None)``, which wins over ``(None, dst)``).
    ``add_outage`` drops everything sent in a time interval (optionally only from/to an address). Every datagram
    an endpoint sends or a test :meth:`inject`\\ s is shown to each function in ``taps`` before its fate is drawn.
    A datagram to an address nobody is attached to (any more) is counted as undeliverable.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: tuple[float, float] = (0.005, 0.02),
        reorder_delay: float = 0.1,
        clock: VirtualClock | None = None,
        max_steps: int = 10_000_000,
    ) -> None:
        self.clock = clock or VirtualClock()
        self.default = LinkConditions(loss, duplicate, reorder, delay, reorder_delay)
        self.taps: list[Callable[[float, Address, Address, bytes], None]] = []
        self._rng = random.Random(seed)
        self._links: dict[tuple[Address | None, Address | None], LinkConditions] = {}
        self._outages: list[_Outage] = []
        self._endpoints: dict[Address, Endpoint] = {}
        self._queue: list[_InFlight] = []
        self._seq = 0
        self._max_steps = max_steps
        self._sent = self._delivered = self._lost = self._duplicated = self._undeliverable = 0

    @property
    def now(self) -> float:
        return self.clock.now

    # -- topology ----------------------------------------------------------------------------------------------

    def attach(self, address: Address, endpoint: Endpoint) -> None:
        if address in self._endpoints:
            raise ValueError(f"{address} is already attached")
        self._endpoints[address] = endpoint

    def detach(self, address: Address) -> Endpoint:
        return self._endpoints.pop(address)

    def move(self, old: Address, new: Address) -> None:
        """Re-attach the endpoint at ``old`` to ``new`` (a NAT rebinding, a new 4G address)."""
        self.attach(new, self._endpoints.pop(old))

    def set_link(self, src: Address | None, dst: Address | None, conditions: LinkConditions) -> None:
        self._links[(src, dst)] = conditions

    def add_outage(self, start: float, end: float, *, src: Address | None = None, dst: Address | None = None) -> None:
        self._outages.append(_Outage(start, end, src, dst))

    def end_outages(self, address: Address) -> None:
        """End, now, every outage from or to ``address``."""
        now = self.clock.now
        self._outages = [replace(o, end=min(o.end, now)) if address in (o.src, o.dst) else o for o in self._outages]

    # -- traffic -----------------------------------------------------------------------------------------------

    def _conditions(self, src: Address, dst: Address) -> LinkConditions:
        for key in ((src, dst), (src, None), (None, dst)):
            if key in self._links:
                return self._links[key]
        return self.default

    def _in_outage(self, src: Address, dst: Address) -> bool:
        now = self.clock.now
        return any(
            o.start <= now < o.end and o.src in (None, src) and o.dst in (None, dst) for o in self._outages
        )

    def inject(self, data: bytes, src: Address, dst: Address) -> None:
        """Send ``data`` as if from ``src`` (spoofed, replayed) under the same link conditions."""
        self._sent += 1
        for tap in self.taps:
            tap(self.clock.now, src, dst, data)
        link = self._conditions(src, dst)
        rng = self._rng
        if self._in_outage(src, dst) or rng.random() < link.loss:
            self._lost += 1
            return
        copies = 1
        if rng.random() < link.duplicate:
            copies, self._duplicated = 2, self._duplicated + 1
        for _ in range(copies):
            delay = rng.uniform(*link.delay)
            if rng.random() < link.reorder:
                delay += rng.uniform(0.0, link.reorder_delay)
            self._seq += 1
            heapq.heappush(self._queue, _InFlight(self.clock.now + delay, self._seq, src, dst, bytes(data)))

    def flush(self) -> None:
        """Collect what every endpoint has to send now."""
        for address, endpoint in list(self._endpoints.items()):
            for data, dst in endpoint.outgoing():
                self.inject(data, address, dst)

    def _next_event(self) -> float | None:
        times = [self._queue[0].at] if self._queue else []
        times += [t for ep in self._endpoints.values() if (t := ep.next_timeout()) is not None]
        return min(times, default=None)

    def _step(self) -> None:
        now = self.clock.now
        while self._queue and self._queue[0].at <= now:
            item = heapq.heappop(self._queue)
            endpoint = self._endpoints.get(item.dst)
            if endpoint is None:
                self._undeliverable += 1
                continue
            self._delivered += 1
            endpoint.receive(item.data, item.src, now)
        for endpoint in list(self._endpoints.values()):
            deadline = endpoint.next_timeout()
            if deadline is not None and deadline <= now:
                endpoint.handle_timeout(now)

    def run_until(self, predicate: Callable[[], bool], limit: float) -> bool:
        """Run events until ``predicate()`` is true (return True) or ``limit`` virtual seconds passed (return
        ``predicate()`` with the clock at the limit). RuntimeError after ``max_steps`` steps (a timer stuck in
        the past)."""
        deadline = self.clock.now + limit
        for _ in range(self._max_steps):
            self.flush()
            if predicate():
                return True
            when = self._next_event()
            if when is None or when > deadline:
                self.clock.jump_to(deadline)
                return predicate()
            self.clock.jump_to(when)
            self._step()
        raise RuntimeError("simulation made no progress within max_steps")

    def run_for(self, duration: float) -> None:
        self.run_until(lambda: False, duration)

    def statistics(self) -> NetworkStatistics:
        return NetworkStatistics(self._sent, self._delivered, self._lost, self._duplicated, self._undeliverable)


class DeviceNode:
    """:class:`Endpoint` for a :class:`DeviceSession` whose server is at ``server``.

    Every event is appended to ``events`` and passed to ``on_event(node, event, now)`` if given (the place for
    an application's reaction, such as sending a reply).
    """

    def __init__(
        self,
        session: DeviceSession,
        server: Address,
        on_event: Callable[[DeviceNode, Event, float], None] | None = None,
    ) -> None:
        self.session = session
        self.server = server
        self.on_event = on_event
        self.events: list[Event] = []

    def _emit(self, events: list[Event], now: float) -> None:
        for event in events:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(self, event, now)

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self._emit(self.session.receive_datagram(data, now), now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return [(data, self.server) for data in self.session.datagrams_to_send()]

    def next_timeout(self) -> float | None:
        return self.session.next_timeout()

    def handle_timeout(self, now: float) -> None:
        self._emit(self.session.handle_timeout(now), now)


class ServerNode:
    """:class:`Endpoint` for a :class:`ServerEndpoint`; events as in :class:`DeviceNode`."""

    def __init__(
        self, server: ServerEndpoint, on_event: Callable[[ServerNode, Event, float], None] | None = None
    ) -> None:
        self.server = server
        self.on_event = on_event
        self.events: list[Event] = []

    def _emit(self, events: list[Event], now: float) -> None:
        for event in events:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(self, event, now)

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self._emit(self.server.receive_datagram(data, src, now), now)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return self.server.datagrams_to_send()

    def next_timeout(self) -> float | None:
        return self.server.next_timeout()

    def handle_timeout(self, now: float) -> None:
        self._emit(self.server.handle_timeout(now), now)
