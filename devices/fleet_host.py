"""Many reference devices in one event loop: :class:`FleetHost`, the engine of ``loa fleet`` and of the benches'
fleets (see :mod:`loa.devices.runner` for the socket layer it shares with :class:`~loa.devices.runner.DeviceRunner`,
the clock simulation and the failure semantics).

One socket per device; on Linux a single ``epoll`` object, itself waited on by anyio, tells which sockets have
data, and one heap of deadlines drives every device's timers, so the cost grows with traffic, not with the number
of tasks. Decoding devices join their multicast groups with sockets of their own; counting devices can share one
socket per group instead, a *group tap* (:mod:`loa.devices.fleet_taps`).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import select
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from loa.devices.core import Address, SpeakerCore
from loa.devices.fleet_taps import GroupTaps
from loa.devices.runner import (
    MAX_DATAGRAM,
    RECV_BATCH,
    SO_TIMESTAMPNS,
    TIMESTAMP_SPACE,
    IoStatistics,
    arrival_time,
    group_interface,
    open_group,
    open_udp_socket,
    realtime_offset,
    send_all,
)
from loa.devices.simclock import SimulatedClock

__all__ = ["FEED_EVERY_S", "FleetHost"]

RECEIVE_SLICE_S = 0.005  # the fleet's receive loop yields to its timers at least this often

OTHER_TIMERS_SHARE = 0.125  # of a slice, the least the counting devices' timers get after their acknowledgements

URGENT_EVERY = 32  # datagrams of a fleet's receive round between two looks at the decoding devices' sockets

WINDOW_POLL_S = 0.05  # how often the starter counts the devices still connecting

FEED_EVERY_S = 0.25  # how often, by default, a group tap hands its counting devices the newest packet they play

@dataclass(order=True, slots=True)
class _Due:
    at: float  # true (host monotonic) time
    index: int = field(compare=False)


class FleetHost:
    """Many devices in one event loop, one socket each (see the module docstring).

    ``devices`` are ``(core, clock)`` pairs; ``start_rate`` devices are started per second (a province does not
    power up at once, and a server under a burst answers with cookies), and no more than ``max_connecting``
    started devices are without a session at any time (default: two seconds' worth at ``start_rate``, at
    least 64). The window matters only when this process falls behind: one process doing the handshakes of
    thousands of devices, each retrying every 5 s as the protocol says, would otherwise spend itself on retries
    whose answers come back too late to count, where real devices each have a processor of their own.
    ``on_tick`` is called every ``tick`` seconds (status lines). The receive loop takes one datagram from each
    ready socket per round and yields to the timers every few milliseconds; the sockets of the first
    ``priority`` devices (those that decode), and their group sockets, are emptied every :data:`URGENT_EVERY`
    datagrams of a round (a second ``epoll`` set of just those sockets says which have data), so that their
    audio, and the ``join`` that has them take a group, do not queue behind the counting devices: a round can
    hold hundreds of alert verifications. Their timers (playout among them) likewise run before the others' in
    each round of the timer loop. :attr:`stats` keeps how late the timers ran at worst (``timer_lag_max_s``,
    and ``priority_timer_lag_max_s`` for the decoding devices): a device of its own would never lag, so this is
    the host falling behind.

    Timers after input: when a device's timer is due, the host first hands it the datagrams waiting in its socket
    (``drain_before_timers``, on by default), then runs the timer. A device of its own reads a datagram as it
    arrives; here the receive loop may be seconds behind (an alert has thousands of signatures verified), and a
    timer that ran first would judge the device's state without what has already reached it: a clock probe's
    answer unread, three probes "unanswered" and the server declared silent (a new handshake, PROTOCOL.md 4.7), or
    ``DEAD_AFTER`` with the server's keepalives in the buffer. Datagrams that arrived after the timer was due but
    before the host came round to it are handed over first too (the host cannot tell them apart without a kernel
    stamp): the device then sees them up to the timer's lag early. :attr:`drained_at_timers` counts the datagrams
    read this way, :attr:`sessions_lost_at_timers` the sessions a device's own timer ended even so (its probes or
    keepalives had no answer from the server).

    Acknowledgements first: a device acknowledges a reliable message within ``ACK_DELAY`` (20 ms, PROTOCOL.md 4.3);
    in a host seconds behind, that timer would wait behind every timer due before it, and the server, hearing
    nothing, would retransmit every message of an alert to every device, several times, each one more datagram
    for this host to take. So a counting device whose acknowledgements are due (:meth:`SpeakerCore.output_due`)
    is also kept in a heap of its own, served after the decoding devices' timers and before the others' timers:
    it runs then (its socket emptied into it first, and whatever else of it is due with it). :attr:`acks_first`
    counts these runs.

    ``timestamps``: the kernel stamps every datagram as it arrives (``SO_TIMESTAMPNS``) and :attr:`arrival`
    holds that time, on the host's monotonic clock, while the datagram is handed to its device. One process
    does the work of many devices one after another; the stamp says when each device would have started on it
    had it its own processor (benchmarks add the device's own processing time to it). Each device also gets it,
    on its own clock, as ``received_at``: its clock exchanges take t4 from the kernel's stamp, not from when this
    process came round to it. The wall-clock offset used for the conversion is read again at every tick;
    :attr:`offset_change_ns` is the largest change seen.

    Multicast: the devices that decode (not ``count_only``) join the groups their core wants, as
    :class:`DeviceRunner` does (on the interface of ``bind_host``, see the module docstring): one socket per device
    and group, kept in step with ``core.groups()`` whenever the device has handled something that moved its timers
    (a ``join`` or ``leave`` does), registered in the same ``epoll``, emptied with the decoding devices' own sockets
    (above), closed on leave and by :meth:`close`. Counting devices do not join groups each; with ``taps`` they
    share one socket per group instead, a *group tap* (:class:`~loa.devices.fleet_taps.GroupTaps`, which says what
    it does and does not check), whose newest packets the host hands them every ``feed_every`` seconds
    (:data:`FEED_EVERY_S`). Groups are joined only where ``epoll`` exists (Linux).

    :attr:`on_received`, when set, is called with a device's index each time the receive loop has handed it a
    datagram from its own socket, while :attr:`arrival` still holds that datagram's time: an observer that
    needs to know when something reached a device (a benchmark) reads the device's state there.
    """

    def __init__(self, devices: Sequence[tuple[SpeakerCore, SimulatedClock]], server: Address, *,
                 bind_host: str | None = None, start_rate: float = 200.0, priority: int = 0,
                 timestamps: bool = False, max_connecting: int | None = None, taps: bool = False,
                 feed_every: float = FEED_EVERY_S, drain_before_timers: bool = True) -> None:
        self.server = server
        self.feed_every = feed_every
        self.max_connecting = max(64, int(2 * start_rate)) if max_connecting is None else max(1, max_connecting)
        self.cores = [core for core, _ in devices]
        self.clocks = [clock for _, clock in devices]
        self.socks: list[socket.socket] = []
        self.priority = max(0, min(priority, len(self.cores)))
        self.timestamps = timestamps and SO_TIMESTAMPNS is not None
        self.arrival = 0.0
        self._realtime_offset = realtime_offset() if self.timestamps else 0
        self.offset_change_ns = 0  # the largest change of that offset seen (the wall clock slewed or stepped)
        self._groups: dict[int, dict[str, socket.socket]] = {}  # device index -> group -> its socket
        self._group_fds: dict[int, tuple[int, str]] = {}  # a group socket's fd -> (device index, group)
        self._poller: Any = None  # the receive loop's epoll object while it runs
        self._urgent: Any = None  # and its set of the decoding devices' sockets (see the class docstring)
        try:
            for core, clock in devices:
                sock = open_udp_socket(server, bind_host)
                self.socks.append(sock)
                if SO_TIMESTAMPNS is not None and self.timestamps:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                core.log.true_time = clock.true
        except OSError:
            self.close()
            raise
        self._by_fd = {sock.fileno(): i for i, sock in enumerate(self.socks)}
        self.interface = group_interface(self.socks[0].getsockname()[0] if self.socks else bind_host)
        joins = hasattr(select, "epoll")
        self._joins_groups = [joins and not core.count_only for core in self.cores]
        self._taps_groups = [joins and taps and core.count_only for core in self.cores]
        self._rates = [clock.rate for clock in self.clocks]  # SimulatedClock.local, unrolled for the hot path
        self._offsets = [clock.offset_s for clock in self.clocks]
        self.stats = IoStatistics()
        self._taps = GroupTaps(self.stats, lambda group: self._open_polled_group(group, stamped=False))
        self.start_rate = start_rate
        self.started = 0
        self._heap: list[_Due] = []
        self._priority_heap: list[_Due] = []  # the decoding devices' timers, run before the others' (see _timers)
        self._ack_heap: list[_Due] = []  # when devices' acknowledgements are due (see _timers)
        self._scheduled: list[float | None] = [None] * len(self.cores)
        self._ack_at: list[float | None] = [None] * len(self.cores)
        self._changed = anyio.Event()
        self.drain_before_timers = drain_before_timers
        self.drained_at_timers = 0  # datagrams handed to a device just before its timers ran (see the docstring)
        self.on_received: Callable[[int], None] | None = None
        self.acks_first = 0  # devices run ahead of the timer heap because their acknowledgements were due
        self.sessions_lost_at_timers = 0  # sessions a device's own timer ended (silent server, DEAD_AFTER...)

    def _schedule(self, index: int) -> None:
        core, clock = self.cores[index], self.clocks[index]
        if index >= self.priority:  # the decoding devices' heap is served first anyway
            output = core.output_due()
            ack = None if output is None else clock.true(output)
            if ack != self._ack_at[index]:
                self._ack_at[index] = ack
                if ack is not None:
                    heapq.heappush(self._ack_heap, _Due(ack, index))
                    if self._ack_heap[0].index == index:
                        self._changed.set()
                        self._changed = anyio.Event()
        local = core.next_event()
        at = None if local is None else clock.true(local)
        if at == self._scheduled[index]:
            return
        self._scheduled[index] = at
        if at is not None:
            heap = self._priority_heap if index < self.priority else self._heap
            heapq.heappush(heap, _Due(at, index))
            if heap[0].index == index:
                self._changed.set()
                self._changed = anyio.Event()

    def _after(self, index: int) -> None:
        send_all(self.socks[index], self.cores[index], self.server, self.stats)
        if self._joins_groups[index]:
            self._sync_groups(index)
        elif self._taps_groups[index]:
            self._taps.sync(index, self.cores[index].groups())
        self._schedule(index)

    def _sync_groups(self, index: int) -> None:
        """Join and leave so that device ``index`` (a decoding one) holds exactly the groups its core wants."""
        wanted = self.cores[index].groups()
        joined = self._groups.get(index)
        if not wanted and not joined:
            return
        joined = self._groups.setdefault(index, {})
        for group in [g for g in joined if g not in wanted]:
            self._leave(index, group)
        for group in wanted - joined.keys():
            sock = self._open_polled_group(group, stamped=self.timestamps)
            if sock is None:
                continue
            joined[group] = sock
            self._group_fds[sock.fileno()] = (index, group)

    def _open_polled_group(self, group: str, *, stamped: bool) -> socket.socket | None:
        """A socket joined to ``group`` (kernel arrival stamps when ``stamped``) and registered with the host's
        pollers; None, counted in ``stats.group_errors``, when the group cannot be joined."""
        try:
            sock = open_group(group, self.interface)
        except (OSError, ValueError):
            self.stats.group_errors += 1
            return None
        try:
            if stamped and SO_TIMESTAMPNS is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            for poller in (self._poller, self._urgent):
                if poller is not None:
                    poller.register(sock.fileno(), select.EPOLLIN)
        except OSError:
            sock.close()
            self.stats.group_errors += 1
            return None
        return sock

    def _leave(self, index: int, group: str) -> None:
        sock = self._groups[index].pop(group)
        del self._group_fds[sock.fileno()]
        sock.close()  # which also takes it out of the epoll set

    def tapped(self, index: int) -> set[str]:
        """The groups whose taps count device ``index`` (a counting device; see the class docstring)."""
        return self._taps.tapped(index)

    def group_received(self, index: int) -> int:
        """Datagrams the taps of device ``index``'s groups received since it was counted onto each."""
        return self._taps.received(index)

    def taps(self) -> dict[str, int]:
        """Every open group tap: group -> datagrams it received."""
        return self._taps.counts()

    def tap_sockets(self) -> list[socket.socket]:
        """The open group taps' sockets (to read their kernel counters; not to receive from)."""
        return self._taps.sockets()

    async def _feed_taps(self) -> None:
        while True:
            await anyio.sleep(self.feed_every)
            began = time.monotonic()
            for n, index in enumerate(self._taps.devices()):
                if n & 255 == 255 and time.monotonic() - began >= RECEIVE_SLICE_S:  # yield like the other loops
                    await anyio.sleep(0)
                    began = time.monotonic()
                core = self.cores[index]
                local = time.monotonic() * self._rates[index] + self._offsets[index]
                if self._taps.feed(index, core, local) and core.timers_changed:
                    self._after(index)

    def scheduled_at(self, index: int) -> float | None:
        """When (host monotonic time) device ``index``'s next timer or playout will run; None: nothing due."""
        return self._scheduled[index]

    def groups(self, index: int) -> set[str]:
        """The multicast groups device ``index`` has joined (none for a counting device: see :meth:`tapped`)."""
        return set(self._groups.get(index, ()))

    def connecting(self) -> int:
        """Started devices without a session."""
        return sum(not core.conn.connected for core in self.cores[: self.started])

    async def _starter(self) -> None:
        begin = time.monotonic()
        connecting, counted_at = 0, -math.inf
        for i, core in enumerate(self.cores):
            wait = begin + i / self.start_rate - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            if i >= self.max_connecting:
                if time.monotonic() - counted_at >= WINDOW_POLL_S:  # a count costs a pass over the started devices
                    connecting, counted_at = self.connecting(), time.monotonic()
                while connecting >= self.max_connecting:
                    await anyio.sleep(WINDOW_POLL_S)
                    connecting, counted_at = self.connecting(), time.monotonic()
                    begin = max(begin, time.monotonic() - i / self.start_rate)  # no burst after a pause
                connecting += 1
            core.start(self.clocks[i].local(time.monotonic()))
            self.started += 1
            self._after(i)

    def _drain(self, index: int) -> int:
        """Hand device ``index`` every datagram waiting in its socket (at most :data:`RECV_BATCH`); how many."""
        drained = 0
        while drained < RECV_BATCH and self._receive_ready((index,), indexes=True):
            drained += 1
        return drained

    def _run_acks(self, now: float, until: float) -> int:
        """Run the devices whose acknowledgements are due by ``now`` (with whatever else of theirs is due), in
        time order, until the clock passes ``until``; their sockets emptied into them first."""
        heap, ack_at, handled = self._ack_heap, self._ack_at, 0
        while heap and heap[0].at <= now and (handled & 15 or time.monotonic() < until):
            due = heapq.heappop(heap)
            index = due.index
            if ack_at[index] != due.at:
                continue  # superseded
            ack_at[index] = None
            self.acks_first += 1
            self._run_device(index, now)
            handled += 1
        return handled

    def _run_device(self, index: int, now: float) -> None:
        """Run device ``index``'s timers at ``now``, its socket emptied into it first (see the class docstring)."""
        core, at = self.cores[index], now
        if self.drain_before_timers:
            drained = self._drain(index)
            if drained:
                self.drained_at_timers += drained
                at = time.monotonic()  # after what it was just handed: its time does not go back
        connected = core.conn.connected
        core.advance(self.clocks[index].local(at))
        if connected and not core.conn.connected:
            self.sessions_lost_at_timers += 1
        self._after(index)

    def _run_due(self, heap: list[_Due], now: float, until: float) -> int:
        """Run the entries of ``heap`` due by ``now`` in time order, until the clock passes ``until``; each
        device's socket is emptied into it first (see the class docstring, "Timers after input")."""
        handled = 0
        lag = 0.0
        while heap and heap[0].at <= now and (handled & 15 or time.monotonic() < until):
            due = heapq.heappop(heap)
            index = due.index
            if self._scheduled[index] != due.at:
                continue  # superseded
            self._scheduled[index] = None
            lag = max(lag, now - due.at)
            self._run_device(index, now)
            handled += 1
        stats = self.stats
        if heap is self._priority_heap:
            stats.priority_timer_lag_max_s = max(stats.priority_timer_lag_max_s, lag)
        stats.timer_lag_max_s = max(stats.timer_lag_max_s, lag)
        if handled and heap is not self._priority_heap:
            stats.timer_lag_s = lag
        return handled

    async def _timers(self) -> None:
        while True:
            now = time.monotonic()
            # Bounded in time like the receive loop's slices, so that neither starves the other: the answers
            # devices wait for (handshake responses, clock probes) must not queue behind thousands of timers.
            # The decoding devices' timers go first: when the host falls behind (an alert makes every device
            # verify a signature at once), their playout must not wait behind the counting devices' timers.
            until = now + RECEIVE_SLICE_S
            handled = self._run_due(self._priority_heap, now, until)
            handled += self._run_acks(now, until)
            # the other timers keep a share of their own (OTHER_TIMERS_SHARE of a slice): a stream of
            # acknowledgements must not starve them, nor they hold back the acknowledgements
            least = time.monotonic() + OTHER_TIMERS_SHARE * RECEIVE_SLICE_S
            handled += self._run_due(self._heap, now, max(until, least))
            if handled:
                await anyio.sleep(0)
                continue
            changed = self._changed
            tops = [heap[0].at for heap in (self._priority_heap, self._ack_heap, self._heap) if heap]
            delay = min(tops) - time.monotonic() if tops else math.inf
            with anyio.move_on_after(max(0.0, delay)):
                await changed.wait()

    def _receive_ready(self, fds: Sequence[int], *, indexes: bool = False) -> int:
        """One datagram from each ready socket (epoll is level-triggered: a socket with more is ready again), so
        the common case costs one ``recvfrom`` and no ``EAGAIN``. ``indexes``: ``fds`` are device indexes.

        With ``timestamps``, :attr:`arrival` is set, before each datagram is handed to its device, to the time
        the kernel received it (``SO_TIMESTAMPNS``, moved from the wall clock to the host's monotonic clock);
        otherwise to the time of this round."""
        stats, socks, cores, by_fd, started = self.stats, self.socks, self.cores, self._by_fd, self.started
        rates, offsets = self._rates, self._offsets
        now = time.monotonic()  # one reading per round: what arrived together is stamped together
        self.arrival = now
        stamped = self.timestamps
        offset = self._realtime_offset
        group_fds, tap_fds = self._group_fds, self._taps.fds
        observe = self.on_received
        count = 0
        for fd in fds:
            index = fd if indexes else by_fd.get(fd)
            if index is None:
                if fd in group_fds:
                    count += self._receive_group(fd, now)
                elif fd in tap_fds:
                    count += self._taps.receive(fd)
                continue
            if index >= started:
                continue
            try:
                if stamped:
                    data, ancillary, _, raw = socks[index].recvmsg(MAX_DATAGRAM, TIMESTAMP_SPACE)
                    self.arrival = arrival_time(ancillary, offset, now)
                    cores[index].received_at = self.arrival * rates[index] + offsets[index]
                else:
                    data, raw = socks[index].recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                stats.receive_errors += 1
                continue
            stats.received += 1
            count += 1
            core = cores[index]
            core.receive_datagram(data, (raw[0], raw[1]), now * rates[index] + offsets[index])
            if observe is not None:
                observe(index)
            if core.timers_changed:  # a counted media packet changes nothing that needs sending or scheduling
                self._after(index)
        return count

    def _receive_group(self, fd: int, now: float) -> int:
        """One datagram from the group socket ``fd`` (0 if it had none), handed to its device with ``group=``;
        :attr:`arrival` as in :meth:`_receive_ready`."""
        index, group = self._group_fds[fd]
        sock, core, stats = self._groups[index][group], self.cores[index], self.stats
        self.arrival = now
        try:
            if self.timestamps:
                data, ancillary, _, raw = sock.recvmsg(MAX_DATAGRAM, TIMESTAMP_SPACE)
                self.arrival = arrival_time(ancillary, self._realtime_offset, now)
                core.received_at = self.arrival * self._rates[index] + self._offsets[index]
            else:
                data, raw = sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            stats.receive_errors += 1
            return 0
        stats.received += 1
        stats.group_received += 1
        core.receive_datagram(data, (raw[0], raw[1]), now * self._rates[index] + self._offsets[index], group=group)
        if core.timers_changed:
            self._after(index)
        return 1

    def _drain_priority(self, urgent: Any) -> None:
        """Empty the ready sockets of the ``urgent`` epoll set: the first ``priority`` devices' (the decoding
        ones: their audio must not wait behind thousands of counting devices), their group sockets and the group
        taps (a whole group's stream each: read once a round like a device's socket, they would overflow)."""
        for _ in range(RECV_BATCH):
            ready = urgent.poll(0)
            if not ready or not self._receive_ready([fd for fd, _ in ready]):
                return

    def _refresh_offset(self) -> None:
        if self.timestamps:
            offset = realtime_offset()
            self.offset_change_ns = max(self.offset_change_ns, abs(offset - self._realtime_offset))
            self._realtime_offset = offset

    async def _receive_epoll(self) -> None:
        poller, urgent = select.epoll(), select.epoll()
        try:
            for sock in self.socks:
                poller.register(sock.fileno(), select.EPOLLIN)
            for sock in self.socks[: self.priority]:
                urgent.register(sock.fileno(), select.EPOLLIN)
            for fd in self._group_fds:
                poller.register(fd, select.EPOLLIN)
                urgent.register(fd, select.EPOLLIN)
            for fd in self._taps.fds:
                poller.register(fd, select.EPOLLIN)
                urgent.register(fd, select.EPOLLIN)
            self._poller, self._urgent = poller, urgent
            while True:
                await anyio.wait_readable(poller.fileno())
                began = time.monotonic()
                while time.monotonic() - began < RECEIVE_SLICE_S:  # bounded: yield to the timers between slices
                    ready = poller.poll(0, 512)
                    if not ready:
                        break
                    fds = [fd for fd, _ in ready]
                    if not (self.priority or self._group_fds or self._taps.fds):
                        self._receive_ready(fds)
                        continue
                    for start in range(0, len(fds), URGENT_EVERY):
                        self._receive_ready(fds[start:start + URGENT_EVERY])
                        self._drain_priority(urgent)
                await anyio.sleep(0)
        finally:
            self._poller = self._urgent = None
            poller.close()
            urgent.close()

    async def _receive_one(self, index: int) -> None:
        sock = self.socks[index]
        while True:
            await anyio.wait_readable(sock)
            for _ in range(RECV_BATCH):
                if not self._receive_ready([sock.fileno()]):
                    break

    async def run(self, *, duration: float | None = None, tick: float = 5.0,
                  on_tick: Callable[[FleetHost], Awaitable[None] | None] | None = None) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._starter)
                tg.start_soon(self._timers)
                if hasattr(select, "epoll"):
                    tg.start_soon(self._receive_epoll)
                    if any(self._taps_groups):
                        tg.start_soon(self._feed_taps)
                else:  # pragma: no cover - not Linux
                    for i in range(len(self.socks)):
                        tg.start_soon(self._receive_one, i)
                deadline = None if duration is None else time.monotonic() + duration
                while deadline is None or time.monotonic() < deadline:
                    step = tick if deadline is None else min(tick, deadline - time.monotonic())
                    await anyio.sleep(max(0.0, step))
                    self._refresh_offset()
                    if on_tick is not None:
                        result = on_tick(self)
                        if result is not None:
                            await result
                tg.cancel_scope.cancel()
        finally:
            for i, core in enumerate(self.cores[: self.started]):
                with contextlib.suppress(OSError):
                    core.close()
                    for data in core.datagrams_to_send():
                        self.socks[i].sendto(data, self.server)
            self.close()

    def close(self) -> None:
        for index in list(self._groups):
            for group in list(self._groups[index]):
                self._leave(index, group)
        self._taps.close()
        for sock in self.socks:
            sock.close()
