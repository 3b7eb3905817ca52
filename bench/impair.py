"""Network impairment for the fault benchmarks and tests: a seeded in-process UDP proxy, and kernel rules.

**In process.** :class:`ImpairProxy` sits between devices and the server on loopback. Each device gets its own
:class:`Leg`: a *front* socket the device sends to (its configured server address) and a *back* socket towards
the server, so the server sees one address per device. Each direction of each leg is a :class:`Channel` with its
own :class:`random.Random`, seeded from ``(seed, leg index, direction)``, so a run is reproducible for one seed
whatever the other legs do. Per datagram a channel decides, in this order:

1. **outage**: inside an outage window of its direction the datagram is dropped (one-way outages: the other
   direction still flows);
2. **loss**: independent with probability ``loss`` (``burst`` 1), or Gilbert-Elliott bursts of mean length
   ``burst`` datagrams with long-run loss ``loss`` (:class:`loa.bench._sim.BurstLoss`);
3. **delay**: ``delay`` plus a uniform ``0..jitter`` seconds (per datagram, so jitter reorders, as netem's does);
   with probability ``reorder`` a further ``reorder_gap`` seconds (it arrives after later datagrams);
4. **duplication**: with probability ``duplicate`` a second copy, delayed like a datagram of its own.

Delayed datagrams wait in one :class:`DelayQueue` (a heap) drained by one task per proxy, not one task per
datagram. :meth:`Leg.move` gives a leg a new back socket (a new source port): to the server the device changed
address, as a NAT rebinding or a new DHCP lease would make it.

**In the kernel.** :class:`KernelFaults` drops datagrams of one direction (by the server's UDP port) with
nftables rules on the ``input`` hook (a dropped datagram vanishes; an ``output`` drop would fail the sender's
``sendto`` with ``EPERM``, which no network does), using ``numgen random`` for random loss and a plain drop for
an outage. :func:`enter_private_network` moves the calling process into a new network namespace of its own (its
``lo`` up), so the rules touch nothing else on the host and vanish with the process. ``tc netem`` is used for
random loss instead where the kernel has it (:func:`kernel_support`); many containers lack ``sch_netem``.

Failure semantics: a datagram the proxy cannot forward (an ICMP error, a socket closed by a move) is dropped and
counted in ``errors``; the proxy's loops run until :meth:`ImpairProxy.aclose`, which closes every socket and
drops what is still queued. Bad parameters raise ValueError naming the parameter; a kernel rule that cannot be
applied raises :class:`KernelFaultError` with the command and its message.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import anyio
import anyio.abc

from loa.bench._sim import BurstLoss

__all__ = [
    "Channel", "Counts", "DelayQueue", "Direction", "ImpairProxy", "Impairment", "KernelFaultError",
    "KernelFaults", "Leg", "enter_private_network", "kernel_support",
]

Address = tuple[str, int]
Direction = Literal["up", "down"]  # up: device -> server; down: server -> device
DIRECTIONS: tuple[Direction, ...] = ("up", "down")
HOST = "127.0.0.1"
MAX_DELAY_S = 5.0  # the fixed delay is at most this
MAX_JITTER_S = 1.0  # jitter and reorder gap are each at most this
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction suffers (see the module docstring for the order). Defaults: a perfect link."""

    loss: float = 0.0
    burst: float = 1.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_gap: float = 0.05
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1), not {value!r}")
        if not 1.0 <= self.burst <= 1000.0:
            raise ValueError(f"burst must be a mean burst length of 1 to 1000 datagrams, not {self.burst!r}")
        for name, most in (("delay", MAX_DELAY_S), ("jitter", MAX_JITTER_S), ("reorder_gap", MAX_JITTER_S)):
            value = getattr(self, name)
            if not 0.0 <= value <= most:
                raise ValueError(f"{name} must be 0 to {most:g} s, not {value!r}")

    @property
    def perfect(self) -> bool:
        return self == Impairment(reorder_gap=self.reorder_gap)


@dataclass(slots=True)
class Counts:
    """Datagrams of one direction: ``forwarded`` (copies sent on, duplicates included), ``dropped`` by loss,
    ``blocked`` by an outage, ``duplicated``, ``delayed`` (queued), ``errors`` (could not be forwarded)."""

    forwarded: int = 0
    dropped: int = 0
    blocked: int = 0
    duplicated: int = 0
    delayed: int = 0
    errors: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def offered(self) -> int:
        """Datagrams that entered the channel."""
        return self.forwarded - self.duplicated + self.dropped + self.blocked + self.errors


class Channel:
    """One direction of one leg: the decisions of the module docstring, no I/O, time passed in.

    :meth:`route` takes a datagram's arrival time and returns the times at which copies of it leave (empty:
    dropped; two: duplicated). Outages are windows ``[start, end)`` on the same clock."""

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.rng = rng
        self.counts = Counts()
        self.outages: list[tuple[float, float]] = []
        self._bursts: BurstLoss | None = None
        self.impairment = impairment
        self.set(impairment)

    def set(self, impairment: Impairment) -> None:
        """Change the impairment from the next datagram on (the random stream goes on)."""
        self.impairment = impairment
        self._bursts = None
        if impairment.burst > 1.0 and impairment.loss > 0.0:
            self._bursts = BurstLoss(self.rng, loss=impairment.loss, mean_burst=impairment.burst)
            self._bursts.active = True

    def outage(self, start: float, end: float) -> None:
        """Drop every datagram arriving in ``[start, end)``. ValueError unless ``start <= end``."""
        if not start <= end:
            raise ValueError(f"an outage must end after it starts ({start!r} > {end!r})")
        self.outages.append((start, end))

    def blocked(self, now: float) -> bool:
        self.outages = [(s, e) for s, e in self.outages if e > now]
        return any(s <= now for s, _ in self.outages)

    def _lost(self) -> bool:
        if self._bursts is not None:
            return self._bursts.drop()
        return self.impairment.loss > 0.0 and self.rng.random() < self.impairment.loss

    def _delay(self) -> float:
        imp = self.impairment
        delay = imp.delay + (self.rng.uniform(0.0, imp.jitter) if imp.jitter else 0.0)
        if imp.reorder and self.rng.random() < imp.reorder:
            delay += imp.reorder_gap
        return delay

    def route(self, now: float) -> list[float]:
        """When the copies of a datagram arriving at ``now`` leave (sorted; counted in :attr:`counts`)."""
        if self.blocked(now):
            self.counts.blocked += 1
            return []
        if self._lost():
            self.counts.dropped += 1
            return []
        out = [now + self._delay()]
        if self.impairment.duplicate and self.rng.random() < self.impairment.duplicate:
            self.counts.duplicated += 1
            out.append(now + self._delay())
        return sorted(out)


class DelayQueue(Generic[T]):
    """Items due at given times, first due first (ties in push order)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._count = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: float, item: T) -> None:
        heapq.heappush(self._heap, (at, self._count, item))
        self._count += 1

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        """Every item due at or before ``now``, in due order."""
        out: list[T] = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def clear(self) -> None:
        self._heap.clear()


@dataclass(eq=False)
class Leg:
    """One device's path through the proxy (see the module docstring)."""

    proxy: ImpairProxy
    index: int
    front: anyio.abc.UDPSocket
    back: anyio.abc.UDPSocket
    up: Channel
    down: Channel
    device: Address | None = None
    moves: int = 0
    back_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    front_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    @property
    def address(self) -> Address:
        """Where the device sends (its server address)."""
        local = self.front.extra(anyio.abc.SocketAttribute.local_address)  # noqa: S610 (anyio, not Django)
        return str(local[0]), int(local[1])

    @property
    def server_side(self) -> Address:
        """The address the server sees for this device now."""
        local = self.back.extra(anyio.abc.SocketAttribute.local_address)  # noqa: S610 (anyio, not Django)
        return str(local[0]), int(local[1])

    def channel(self, direction: Direction) -> Channel:
        return self.up if direction == "up" else self.down

    async def move(self) -> Address:
        """Forward from a new source port from now on (the old back socket is closed); returns the new one.
        Datagrams queued for the old socket go out of the new one."""
        new = await anyio.create_udp_socket(local_host=self.proxy.host)
        old, old_scope = self.back, self.back_scope
        self.back, self.back_scope = new, anyio.CancelScope()
        self.moves += 1
        self.proxy._start_back(self)
        old_scope.cancel()
        await old.aclose()
        return self.server_side


class ImpairProxy:
    """See the module docstring. Its loops run in ``tg``; one :meth:`add_leg` per device. ``clock`` is the time
    base of outages and delays (seconds; default :func:`time.monotonic`, the devices' true timeline)."""

    def __init__(self, tg: anyio.abc.TaskGroup, server: Address, *, up: Impairment | None = None,
                 down: Impairment | None = None, seed: int = 1, host: str = HOST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tg = tg
        self.server = server
        self.host = host
        self.seed = seed
        self.clock = clock
        self.impairments: dict[Direction, Impairment] = {"up": up or Impairment(), "down": down or Impairment()}
        self.legs: list[Leg] = []
        self._queue: DelayQueue[tuple[Leg, Direction, bytes]] = DelayQueue()
        self._wakeup = anyio.Event()
        self._closed = False
        self._scope = anyio.CancelScope()
        # one sender at a time per socket: anyio refuses a second send while one waits for buffer space
        self._send_locks: dict[int, anyio.Lock] = {}
        tg.start_soon(self._delivery_loop)

    async def add_leg(self) -> Leg:
        """A new leg (one per device); its :attr:`Leg.address` is what the device uses as server address."""
        index = len(self.legs)
        front = await anyio.create_udp_socket(local_host=self.host)
        back = await anyio.create_udp_socket(local_host=self.host)
        leg = Leg(self, index, front, back,
                  Channel(self.impairments["up"], random.Random(f"{self.seed}/{index}/up")),
                  Channel(self.impairments["down"], random.Random(f"{self.seed}/{index}/down")))
        self.legs.append(leg)
        self._tg.start_soon(self._front_loop, leg)
        self._start_back(leg)
        return leg

    def set(self, *, up: Impairment | None = None, down: Impairment | None = None) -> None:
        """Change the impairment of a direction on every leg (and for legs added later)."""
        for direction, impairment in (("up", up), ("down", down)):
            if impairment is not None:
                self.impairments[direction] = impairment  # type: ignore[index]
                for leg in self.legs:
                    leg.channel(direction).set(impairment)  # type: ignore[arg-type]

    def outage(self, direction: Direction, seconds: float, *, start: float | None = None) -> tuple[float, float]:
        """A one-way outage on every leg from ``start`` (default now) for ``seconds``; returns (start, end)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        if not 0.0 <= seconds <= 3600.0:
            raise ValueError(f"an outage lasts 0 to 3600 s, not {seconds!r}")
        begin = self.clock() if start is None else start
        for leg in self.legs:
            leg.channel(direction).outage(begin, begin + seconds)
        return begin, begin + seconds

    def totals(self) -> dict[Direction, Counts]:
        """Counts per direction over all legs."""
        out: dict[Direction, Counts] = {"up": Counts(), "down": Counts()}
        for leg in self.legs:
            out["up"].add(leg.up.counts)
            out["down"].add(leg.down.counts)
        return out

    # -- loops -------------------------------------------------------------------------------------------------

    def _start_back(self, leg: Leg) -> None:
        self._tg.start_soon(self._back_loop, leg, leg.back, leg.back_scope)

    async def _pass(self, leg: Leg, direction: Direction, data: bytes) -> None:
        channel = leg.channel(direction)
        now = self.clock()
        for at in channel.route(now):
            if at <= now:
                await self._send(leg, direction, data)
            else:
                channel.counts.delayed += 1
                wake = self._queue.next_deadline()
                self._queue.push(at, (leg, direction, data))
                if wake is None or at < wake:
                    self._wakeup.set()

    async def _send(self, leg: Leg, direction: Direction, data: bytes) -> None:
        """Send one datagram on; the receive loop of its direction and the delivery loop may both be sending on
        the same socket, so the sends of one socket take turns."""
        counts = leg.channel(direction).counts
        if direction == "up":
            sock, target = leg.back, self.server
        elif leg.device is not None:
            sock, target = leg.front, leg.device
        else:
            counts.errors += 1
            return
        lock = self._send_locks.setdefault(id(sock), anyio.Lock(fast_acquire=True))
        try:
            async with lock:
                await sock.sendto(data, *target)
            counts.forwarded += 1
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):  # a move closed the socket
            counts.errors += 1

    async def _front_loop(self, leg: Leg) -> None:
        """Device -> server."""
        with leg.front_scope, contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            while True:
                try:
                    data, source = await leg.front.receive()
                except OSError:
                    leg.up.counts.errors += 1
                    continue
                leg.device = (str(source[0]), int(source[1]))
                await self._pass(leg, "up", data)

    async def _back_loop(self, leg: Leg, sock: anyio.abc.UDPSocket, scope: anyio.CancelScope) -> None:
        """Server -> device, on one back socket until it is replaced."""
        with scope, contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            while True:
                try:
                    data, _ = await sock.receive()
                except OSError:
                    leg.down.counts.errors += 1
                    continue
                await self._pass(leg, "down", data)

    async def _delivery_loop(self) -> None:
        """Sends queued datagrams when they are due: one task for the whole proxy."""
        with self._scope:
            while True:
                deadline = self._queue.next_deadline()
                if deadline is None:
                    await self._wakeup.wait()
                else:
                    with anyio.move_on_after(max(0.0, deadline - self.clock())):
                        await self._wakeup.wait()
                self._wakeup = anyio.Event()
                for leg, direction, data in self._queue.pop_due(self.clock()):
                    await self._send(leg, direction, data)

    async def aclose(self) -> None:
        """Stop forwarding, drop what is queued and close every socket (the loops end)."""
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        self._queue.clear()
        for leg in self.legs:
            leg.back_scope.cancel()
            leg.front_scope.cancel()
            await leg.front.aclose()
            await leg.back.aclose()


# -- kernel -----------------------------------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000
TABLE = "loa_faults"


class KernelFaultError(RuntimeError):
    """A namespace or a kernel rule could not be set up (the message says which command and why)."""


def _run(args: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelFaultError(f"{' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise KernelFaultError(f"{' '.join(args)}: {message[0] if message else f'exit {done.returncode}'}")
    return done.stdout


def enter_private_network() -> None:
    """Move this process into a new network namespace with only ``lo`` (up). Call it before any thread starts:
    a thread started earlier stays in the old namespace. KernelFaultError if the kernel refuses (not root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise KernelFaultError(f"cannot create a network namespace: {os.strerror(errno)} (needs root)")
    _run(["ip", "link", "set", "lo", "up"])


def kernel_support(probe: Callable[[list[str]], str] = _run) -> tuple[str | None, str]:
    """Which kernel backend works here, tried in a throwaway namespace: ``("netem", why)``, ``("nft", why)`` or
    ``(None, reason)``: one line that says what is missing."""
    if os.geteuid() != 0:
        return None, "kernel impairment needs root (network namespaces, nftables rules)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "kernel impairment needs util-linux unshare and iproute2 ip"
    script = "ip link set lo up && {}"
    nft = shutil.which("nft") is not None
    if nft:
        try:
            probe(["unshare", "--net", "sh", "-c", script.format(
                f"nft add table inet {TABLE} && nft add chain inet {TABLE} input "
                "'{ type filter hook input priority 0; }' && "
                f"nft add rule inet {TABLE} input udp dport 9 numgen random mod 1000 '<' 1 drop")])
        except KernelFaultError as exc:
            return None, f"nftables cannot filter in a network namespace here: {exc}"
    else:
        return None, "kernel impairment needs nftables (apt-get install nftables); tc netem is used beside it"
    try:
        probe(["unshare", "--net", "sh", "-c", script.format("tc qdisc add dev lo root netem loss 1%")])
    except KernelFaultError as exc:
        return "nft", f"nftables random drops (tc netem unavailable: {exc})"
    return "netem", "tc netem for loss, nftables for one-way outages"


class KernelFaults:
    """Kernel impairment of the traffic to and from ``server_port`` on this namespace's ``lo`` (see the module
    docstring). ``backend`` ``"nft"`` or ``"netem"`` (loss by ``tc netem``, which then applies to every datagram
    on ``lo`` in both directions; outages are nftables drops either way). Use it in a namespace of its own: the
    table ``loa_faults`` is replaced whole on every change (one atomic ``nft -f``)."""

    def __init__(self, server_port: int, *, backend: str = "nft",
                 run: Callable[[list[str], str | None], str] | None = None) -> None:
        if backend not in ("nft", "netem"):
            raise ValueError(f"backend must be 'nft' or 'netem', not {backend!r}")
        self.port = server_port
        self.backend = backend
        self._run = run or _run
        self.losses: dict[Direction, float] = {"up": 0.0, "down": 0.0}
        self.blocked: set[Direction] = set()
        self._netem = False
        self._applied = False
        self._carried: dict[Direction, tuple[int, int]] = {"up": (0, 0), "down": (0, 0)}
        self._apply()

    def _match(self, direction: Direction) -> str:
        return f"udp {'dport' if direction == 'up' else 'sport'} {self.port}"

    def ruleset(self) -> str:
        """The nft script for the current state."""
        lines = [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}", f"table inet {TABLE} {{",
                 "  chain input {", "    type filter hook input priority 0; policy accept;"]
        for direction in DIRECTIONS:
            lines.append(f"    {self._match(direction)} counter")
            if direction in self.blocked:
                lines.append(f"    {self._match(direction)} counter drop")
            elif self.backend == "nft" and self.losses[direction] > 0.0:
                lines.append(f"    {self._match(direction)} numgen random mod 1000 < "
                             f"{round(1000 * self.losses[direction])} counter drop")
        return "\n".join([*lines, "  }", "}", ""])

    def _apply(self) -> None:
        if self._applied:
            self._carried = self.counts()
        self._run(["nft", "-f", "-"], self.ruleset())
        self._applied = True

    def counts(self) -> dict[Direction, tuple[int, int]]:
        """(datagrams seen, dropped by a rule) per direction since this object was made (netem's own drops are
        not seen by nftables: with netem, the datagrams it dropped are missing from ``seen``)."""
        out = dict(self._carried)
        text = self._run(["nft", "list", "table", "inet", TABLE], None)
        for line in text.splitlines():
            m = re.search(r"udp (dport|sport) (\d+) .*counter packets (\d+)", line)
            if m is None or int(m.group(2)) != self.port:
                continue
            direction: Direction = "up" if m.group(1) == "dport" else "down"
            seen, dropped = out[direction]
            if line.rstrip().endswith("drop"):
                out[direction] = (seen, dropped + int(m.group(3)))
            else:
                out[direction] = (seen + int(m.group(3)), dropped)
        return out

    def rules(self) -> list[str]:
        """The drop rules in force, as nft prints them."""
        out = self._run(["nft", "list", "table", "inet", TABLE], None)
        return [line.strip() for line in out.splitlines() if "drop" in line]

    def loss(self, fraction: float) -> None:
        """Random loss of ``fraction`` (to 0.1 %) both ways (netem: every datagram on ``lo``)."""
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"loss must be a fraction in [0, 1), not {fraction!r}")
        if self.backend == "netem":
            if fraction > 0.0:
                self._run(["tc", "qdisc", "replace", "dev", "lo", "root", "netem", "loss", f"{100 * fraction:.3f}%"],
                          None)
                self._netem = True
            elif self._netem:
                self._run(["tc", "qdisc", "del", "dev", "lo", "root"], None)
                self._netem = False
        self.losses = {"up": fraction, "down": fraction}
        self._apply()

    def block(self, direction: Direction) -> None:
        """Start a one-way outage: every datagram of ``direction`` is dropped until :meth:`unblock`."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        self.blocked.add(direction)
        self._apply()

    def unblock(self, direction: Direction) -> None:
        self.blocked.discard(direction)
        self._apply()

    def clear(self) -> None:
        """Remove every impairment."""
        self.blocked.clear()
        self.loss(0.0)

    def close(self) -> None:
        with contextlib.suppress(KernelFaultError):
            self.clear()
            self._run(["nft", "delete", "table", "inet", TABLE], None)
