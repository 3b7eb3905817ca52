"""Group taps: one shared socket per multicast group for all of a :class:`~loa.devices.fleet_host.FleetHost`'s
counting devices (a simulation shortcut: real devices each receive their own copy).

Counting devices say ``multicast`` in ``hello`` like every reference device, so the server sends their zone's
stream to the group and not to them, but they do not join it each: ten thousand memberships on one host would have
the kernel copy every frame ten thousand times into this one process, the very load a group spares the server.
Without taps they count no media in a zone with a group (their watchdog sees a silent stream). With taps the host
holds one socket per group for all of them. A counting device that wants a group (``core.groups()``, kept in step
by the host whenever the device has handled something that moved its timers) is counted onto its tap with a
snapshot of the tap's count; :meth:`GroupTaps.received` is what the tap received since, one count per datagram
whatever the number of devices. Every ``feed_every`` seconds the host hands each tapped device, through its
ordinary counting path (``receive_datagram`` from the packet's real source, with ``group=``), the newest packet of
the stream it plays (its current broadcast's, when that comes on a group) that the tap received since the last
hand-over (:meth:`GroupTaps.feed`): its watchdog, its ``state`` (``ip``) and its counters see the group stream as
they see a filtered unicast stream, one packet per ``feed_every`` (one in 12 of 20 ms frames by default), the
others counted as sequence gaps; a broadcast waiting behind the current one is not fed.

A tap does not check per-device delivery: a datagram the tap lost is lost to every device and one it got counts
for every device tapping it (no per-device loss, order or timing on the group), and nothing checks a device's own
kernel membership; what it checks is that the server sent the stream to the group each device was told in its
``join``, while the device wanted it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from loa.devices.core import Address, SpeakerCore
from loa.devices.runner import MAX_DATAGRAM, RECV_BATCH, IoStatistics

__all__ = ["TAP_SSRCS", "GroupTaps"]

TAP_SSRCS = 64  # streams a group tap remembers the newest packet of (the oldest is forgotten first)


@dataclass(slots=True)
class _GroupTap:
    sock: socket.socket
    members: int = 0  # counting devices tapping it
    datagrams: int = 0  # received on it so far
    latest: dict[int, tuple[int, bytes, Address]] = field(default_factory=dict)  # SSRC -> (number, packet, source)


class GroupTaps:
    """The taps of one host. ``open_group`` opens a socket joined to a group and registered with the host's pollers
    (None when the group cannot be joined); a tap's socket is closed after its last device leaves."""

    __slots__ = ("_open_group", "_stats", "_tapped", "_taps", "fds")

    def __init__(self, stats: IoStatistics, open_group: Callable[[str], socket.socket | None]) -> None:
        self._stats = stats
        self._open_group = open_group
        self._taps: dict[str, _GroupTap] = {}  # by group
        self.fds: dict[int, str] = {}  # a tap's fd -> its group
        self._tapped: dict[int, dict[str, list[int]]] = {}  # device -> group -> [tap count at join, at last feed]

    def sync(self, index: int, wanted: set[str]) -> None:
        """Count device ``index`` onto exactly the taps of the groups in ``wanted``, opening a tap for its first
        device and closing it after its last."""
        tapped = self._tapped.get(index)
        if not wanted and not tapped:
            return
        tapped = self._tapped.setdefault(index, {})
        for group in [g for g in tapped if g not in wanted]:
            self._untap(index, group)
        for group in wanted - tapped.keys():
            tap = self._taps.get(group)
            if tap is None:
                sock = self._open_group(group)
                if sock is None:
                    continue
                tap = self._taps[group] = _GroupTap(sock)
                self.fds[sock.fileno()] = group
            tap.members += 1
            tapped[group] = [tap.datagrams, tap.datagrams]
        if not tapped:
            self._tapped.pop(index, None)

    def _untap(self, index: int, group: str) -> None:
        tapped = self._tapped[index]
        del tapped[group]
        if not tapped:
            del self._tapped[index]
        tap = self._taps[group]
        tap.members -= 1
        if not tap.members:
            del self._taps[group]
            del self.fds[tap.sock.fileno()]
            tap.sock.close()  # which also takes it out of the epoll set

    def tapped(self, index: int) -> set[str]:
        """The groups whose taps count device ``index``."""
        return set(self._tapped.get(index, ()))

    def devices(self) -> list[int]:
        """The devices some tap counts."""
        return list(self._tapped)

    def received(self, index: int) -> int:
        """Datagrams the taps of device ``index``'s groups received since it was counted onto each."""
        return sum(self._taps[group].datagrams - marks[0] for group, marks in self._tapped.get(index, {}).items())

    def counts(self) -> dict[str, int]:
        """Every open tap: group -> datagrams it received."""
        return {group: tap.datagrams for group, tap in self._taps.items()}

    def sockets(self) -> list[socket.socket]:
        """The open taps' sockets (to read their kernel counters; not to receive from)."""
        return [tap.sock for tap in self._taps.values()]

    def receive(self, fd: int) -> int:
        """Empty the tap ``fd`` (up to :data:`RECV_BATCH` datagrams; it carries a whole group's stream, not one
        device's share): each datagram counted, an RTP one kept as its stream's newest. Returns how many."""
        tap = self._taps[self.fds[fd]]
        latest = tap.latest
        count = 0
        for _ in range(RECV_BATCH):
            try:
                data, raw = tap.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._stats.receive_errors += 1
                continue
            count += 1
            tap.datagrams += 1
            if len(data) >= 12 and data[0] & 0xC0 == 0x80 and not 192 <= data[1] <= 223:  # RTP, not RTCP
                ssrc = int.from_bytes(data[8:12], "big")
                if ssrc not in latest and len(latest) >= TAP_SSRCS:
                    del latest[min(latest, key=lambda s: latest[s][0])]
                latest[ssrc] = (tap.datagrams, data, (raw[0], raw[1]))
        self._stats.received += count
        self._stats.group_received += count
        return count

    def feed(self, index: int, core: SpeakerCore, local: float) -> bool:
        """Hand device ``index`` (``core``, whose clock reads ``local``) the newest packet of each stream of the
        broadcast it plays, when that comes on a tapped group, that the tap received since the last hand-over.
        Returns whether it was handed anything."""
        tapped = self._tapped.get(index)
        if not tapped:
            return False
        current = core.broadcasts.get(core.arbiter.current) if core.arbiter.current is not None else None
        live = None if current is None else current.live
        group = None if live is None else live.group
        marks = None if group is None else tapped.get(group)
        if live is None or group is None or marks is None:
            return False
        tap = self._taps[group]
        since = marks[1]
        if tap.datagrams == since:
            return False
        marks[1] = tap.datagrams
        fed = False
        for ssrc in live.ssrcs:
            newest = tap.latest.get(ssrc)
            if newest is not None and newest[0] > since:
                core.receive_datagram(newest[1], newest[2], local, group=group)
                fed = True
        return fed

    def close(self) -> None:
        for index in list(self._tapped):
            for group in list(self._tapped[index]):
                self._untap(index, group)
