"""The I/O around :class:`~loa.devices.core.SpeakerCore`: UDP sockets, timers and the playout clock, on anyio.

:class:`DeviceRunner` runs one device on its own non-blocking UDP socket: a receive loop drains the socket into
the core, a timer loop honours ``next_timeout()``, a playout loop honours ``next_playout()``, and every loop
sends what the core queued to the server address. It runs on trio and on asyncio (uvloop where installed):
:func:`run` picks the backend. :class:`~loa.devices.fleet_host.FleetHost` runs thousands of devices in one task
group with one socket each, on this module's socket helpers (:func:`open_udp_socket`, :func:`open_group`,
:func:`send_all`, :func:`arrival_time`).

IP multicast (PROTOCOL.md section 5.7): a device joins the groups its core wants (``SpeakerCore.groups()``) with
one socket per group, and hands what arrives there to the core with ``group=``. The membership is taken on the
interface of the device's own bind address when that is a specific IPv4 address (127.0.0.1 on one host: a streamer
bound there sends its groups out of ``lo``), on any interface (the routing table's choice) otherwise. A
:class:`FleetHost`'s counting devices can share one socket per group instead, a *group tap* (see the class).

Both simulate the device clock: the host's monotonic clock is the *true* time, and each device sees
``SimulatedClock.local(true)`` (offset and drift), as a fleet of real devices would. The playout log records
both times.

Failure semantics: a datagram that cannot be sent (``EAGAIN`` past a short wait, an unreachable network) is
dropped and counted in :attr:`IoStatistics.send_errors`; receive errors (an ICMP error reported on the
socket) are counted and the loop goes on. Cancelling the runner's scope stops every loop; sockets are closed on
the way out. Datagrams already handed to the kernel may or may not have been sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from loa.devices.core import Address, SpeakerCore
from loa.devices.simclock import SimulatedClock

__all__ = ["DeviceRunner", "IoStatistics", "group_interface", "open_group", "open_udp_socket", "realtime_offset",
           "run"]

RECV_BATCH = 256  # datagrams taken from one socket before the loop yields
SEND_WAIT_S = 0.05
MAX_DATAGRAM = 2048
# SO_TIMESTAMPNS (asm-generic/socket.h; Python does not name it): a struct timespec of the wall clock per datagram
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
TIMESTAMP_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
_TIMESPEC = struct.Struct("@qq")


def realtime_offset() -> int:
    """``CLOCK_REALTIME - CLOCK_MONOTONIC`` in nanoseconds, from the closest of a few bracketed readings (the
    kernel stamps received datagrams on the wall clock; the fleet's times are on the monotonic one)."""
    best = None
    for _ in range(5):
        before = time.monotonic_ns()
        real = time.time_ns()
        after = time.monotonic_ns()
        if best is None or after - before < best[0]:
            best = (after - before, real - (before + after) // 2)
    assert best is not None
    return best[1]


def arrival_time(ancillary: list[tuple[int, int, bytes]], offset: int, default: float) -> float:
    """The kernel's receive time of a datagram, in host monotonic seconds (``default`` if it gave none)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return (int(seconds) * 1_000_000_000 + int(nanoseconds) - offset) / 1e9
    return default


@dataclass(slots=True)
class IoStatistics:
    received: int = 0
    sent: int = 0
    send_errors: int = 0
    receive_errors: int = 0
    group_received: int = 0  # of ``received``: datagrams that came on a joined multicast group
    group_errors: int = 0  # groups that could not be joined (an IPv6 group, an address in use...)
    timer_lag_max_s: float = 0.0  # FleetHost: the latest a device's timer or playout ran after it was due
    timer_lag_s: float = 0.0  # FleetHost: the same, in the latest round that ran a counting device's timer
    priority_timer_lag_max_s: float = 0.0  # the same for the first ``priority`` devices (those that decode)


def open_udp_socket(server: Address, bind_host: str | None = None, port: int = 0) -> socket.socket:
    """A non-blocking UDP socket of the server address's family, bound to ``bind_host:port``. Raises OSError."""
    family = socket.AF_INET6 if ipaddress.ip_address(server[0]).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        host = bind_host if bind_host is not None else ("::" if family == socket.AF_INET6 else "0.0.0.0")  # noqa: S104
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _address(raw: Any) -> Address:
    return (str(raw[0]).split("%")[0], int(raw[1]))


def send_all(sock: socket.socket, core: SpeakerCore, server: Address, stats: IoStatistics) -> list[bytes]:
    """Send what the core queued; returns what would block (to retry after waiting for writability)."""
    pending = core.datagrams_to_send()
    for i, data in enumerate(pending):
        try:
            sock.sendto(data, server)
            stats.sent += 1
        except BlockingIOError:
            return pending[i:]
        except OSError:
            stats.send_errors += 1
    return []


def _drain(sock: socket.socket, core: SpeakerCore, clock: SimulatedClock, stats: IoStatistics,
           group: str | None = None) -> int:
    count = 0
    for _ in range(RECV_BATCH):
        try:
            data, raw = sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # e.g. ECONNREFUSED: an ICMP error for an earlier send
            stats.receive_errors += 1
            continue
        stats.received += 1
        if group is not None:
            stats.group_received += 1
        count += 1
        core.receive_datagram(data, _address(raw), clock.local(time.monotonic()), group=group)
    return count


class DeviceRunner:
    """One device on its own socket (see the module docstring). ``clock`` simulates the device clock.

    Multicast groups are joined on the interface of the address the socket is bound to (``bind_host``, or
    ``sock``'s) when that is a specific IPv4 address; a group that cannot be joined is counted in
    ``stats.group_errors`` and tried again after the next datagram."""

    def __init__(self, core: SpeakerCore, server: Address, *, clock: SimulatedClock | None = None,
                 sock: socket.socket | None = None, bind_host: str | None = None) -> None:
        self.core = core
        self.server = server
        self.clock = clock or SimulatedClock()
        self.sock = sock if sock is not None else open_udp_socket(server, bind_host)
        self.interface = group_interface(self.sock.getsockname()[0])  # where groups are joined
        self.stats = IoStatistics()
        self._changed = anyio.Event()
        self._backlog: list[bytes] = []
        self._groups: dict[str, socket.socket] = {}
        self._task_group: TaskGroup | None = None
        core.log.true_time = self.clock.true

    @property
    def local_address(self) -> Address:
        return _address(self.sock.getsockname())

    def now(self) -> float:
        return self.clock.local(time.monotonic())

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _flush(self) -> None:
        self._backlog += send_all(self.sock, self.core, self.server, self.stats)
        for _ in range(8):  # bounded: a socket that stays full loses the rest
            if not self._backlog:
                return
            with anyio.move_on_after(SEND_WAIT_S):
                await anyio.wait_writable(self.sock)
            data = self._backlog.pop(0)
            try:
                self.sock.sendto(data, self.server)
                self.stats.sent += 1
            except OSError:
                self.stats.send_errors += 1
        self.stats.send_errors += len(self._backlog)
        self._backlog.clear()

    async def _sleep_until(self, deadline: float | None) -> None:
        """Sleep until local ``deadline`` (None: until poked) or until something changed."""
        changed = self._changed
        delay = math.inf if deadline is None else self.clock.true(deadline) - time.monotonic()
        if delay <= 0:
            await anyio.sleep(0)
            return
        with anyio.move_on_after(delay):
            await changed.wait()

    async def _receive_loop(self, sock: socket.socket, group: str | None = None) -> None:
        while True:
            await anyio.wait_readable(sock)
            if _drain(sock, self.core, self.clock, self.stats, group):
                await self._flush()
                self._sync_groups()
                self._poke()

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_timeout()
            if deadline is not None and deadline <= self.now():
                self.core.handle_timeout(self.now())
                await self._flush()
                self._sync_groups()  # a broadcast that ended on a timer leaves its group
                self._poke()
                await anyio.sleep(0)
                continue
            await self._sleep_until(deadline)

    async def _playout_loop(self) -> None:
        while True:
            deadline = self.core.next_playout()
            if deadline is not None and deadline <= self.now():
                self.core.play(self.now())
                await self._flush()
                await anyio.sleep(0)
                continue
            await self._sleep_until(deadline)

    def groups(self) -> set[str]:
        """The multicast groups this device has joined."""
        return set(self._groups)

    def _sync_groups(self) -> None:
        wanted = self.core.groups()
        for group in list(self._groups):
            if group not in wanted:
                self._groups.pop(group).close()
        for group in wanted - set(self._groups):
            if self._task_group is None:
                return
            try:
                self._groups[group] = open_group(group, self.interface)
            except (OSError, ValueError):
                self.stats.group_errors += 1
                continue
            self._task_group.start_soon(self._receive_loop, self._groups[group], group)

    async def run(self, *, duration: float | None = None) -> None:
        """Start the device and run until ``duration`` seconds passed (None: until cancelled)."""
        self.core.start(self.now())
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._receive_loop, self.sock)
                tg.start_soon(self._timer_loop)
                tg.start_soon(self._playout_loop)
                await self._flush()
                if duration is not None:
                    await anyio.sleep(duration)
                    tg.cancel_scope.cancel()
        finally:
            with contextlib.suppress(OSError):
                self.core.close()
                for data in self.core.datagrams_to_send():
                    self.sock.sendto(data, self.server)
            self.close()

    def close(self) -> None:
        for sock in self._groups.values():
            sock.close()
        self._groups.clear()
        self.sock.close()


ANY_INTERFACE = "0.0.0.0"  # noqa: S104 - IP_ADD_MEMBERSHIP's INADDR_ANY: the routing table picks the interface


def group_interface(bind_host: str | None) -> str:
    """The IPv4 address whose interface joins multicast groups for a device bound to ``bind_host``: that address
    itself when it is a specific IPv4 address, else :data:`ANY_INTERFACE` (a wildcard bind, IPv6, a name)."""
    try:
        address = ipaddress.ip_address(bind_host or "")
    except ValueError:
        return ANY_INTERFACE
    return str(address) if address.version == 4 and not address.is_unspecified else ANY_INTERFACE


def open_group(group: str, interface: str = ANY_INTERFACE) -> socket.socket:
    """A non-blocking socket that receives the IPv4 multicast group ``"a.b.c.d:port"``, joined on the interface
    of the local IPv4 address ``interface``. ValueError for a malformed or IPv6 group (the reference device joins
    IPv4 groups only), OSError when the kernel refuses (no such interface, the port in use without
    ``SO_REUSEADDR``, the membership limit)."""
    host, _, port = group.rpartition(":")
    address = ipaddress.ip_address(host.strip("[]"))
    if address.version != 4:
        raise ValueError("IPv6 multicast groups are not joined by the reference device")
    if not address.is_multicast or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a multicast group is ADDR:PORT with a multicast address, not {group!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind((str(address), int(port)))
        membership = address.packed + socket.inet_aton(interface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    except OSError:
        sock.close()
        raise
    return sock


def run(main: Callable[[], Awaitable[None]], backend: str = "trio") -> None:
    """Run ``main`` on ``backend`` (``"trio"``, or ``"asyncio"`` with uvloop when it is installed)."""
    options: dict[str, Any] = {}
    if backend == "asyncio":
        try:
            import uvloop  # noqa: F401
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
        else:
            options["use_uvloop"] = True
    anyio.run(main, backend=backend, backend_options=options)
