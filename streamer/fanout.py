"""Fan-out: one already-encrypted datagram to every member of a destination set, in a few system calls.

On Linux the destination set is a preallocated ``mmsghdr`` table (:class:`~loa.streamer._sendmmsg.MessageTable`):
one ``sockaddr`` slot per destination, packed when the destination is added or moves, and every ``msghdr``
pointing at the same single ``iovec``, which points at the one packet buffer. Sending a packet copies it into that
buffer, sets the iovec length and calls ``sendmmsg(2)`` once per batch of up to 1024 destinations: a constant
number of Python operations per packet, whatever the number of destinations. Elsewhere (or with
``backend="sendto"``) a plain ``sendto`` loop gives the same results, more slowly.

The socket must be non-blocking; nothing here waits inside a system call. When the kernel takes no more
(``EAGAIN``, ``ENOBUFS``), :meth:`Fanout.send` returns early and the rest stays *pending*: :meth:`Fanout.resume`
continues from the first destination not yet served, and :meth:`Fanout.wait_sent` waits for writability under
anyio and resumes until done. One packet at most is pending at a time.

Destinations are named by caller-chosen hashable keys (a session id, say). Removal moves the last destination
into the hole, so every change to the set is O(1).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from loa.streamer._sendmmsg import (
    IoVec,
    MessageTable,
    SendMmsg,
    load_sendmmsg,
    pack_sockaddr,
    resolve_destination,
)

__all__ = ["DEFAULT_BACKEND", "MAX_BATCH", "MAX_DATAGRAM", "Backend", "Fanout", "FanoutBusyError",
           "FanoutStatistics"]

MAX_BATCH = 1024  # UIO_MAXIOV: the most messages the kernel takes in one sendmmsg call
MAX_DATAGRAM = 65535

Backend = Literal["auto", "sendmmsg", "sendto"]

_SENDMMSG = load_sendmmsg()
DEFAULT_BACKEND: Literal["sendmmsg", "sendto"] = "sendmmsg" if _SENDMMSG is not None else "sendto"

_BLOCKED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
# Errors that concern one destination only: it is skipped and counted as failed.
_PER_DESTINATION = frozenset({
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EPERM, errno.EACCES,
    errno.EADDRNOTAVAIL, errno.ECONNREFUSED,
})


def _no_sendmmsg(fd: int, msgvec: ctypes.c_void_p, vlen: int, flags: int) -> int:
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


class FanoutBusyError(RuntimeError):
    """A packet is still pending: resume or discard it before sending another."""


@dataclass(frozen=True, slots=True)
class FanoutStatistics:
    """Counters since the fan-out was created, in datagrams (one packet to one destination)."""

    destinations: int
    pending: int
    sent: int
    failed: int
    blocked: int
    discarded: int


class Fanout:
    """Send one datagram to many destinations from one non-blocking UDP socket.

    ``backend`` is ``"sendmmsg"`` (Linux), ``"sendto"`` (anywhere) or ``"auto"`` (sendmmsg where the C library
    has it). An ``AF_INET6`` socket reaches IPv4 destinations through IPv4-mapped addresses unless it is
    ``IPV6_V6ONLY``. Raises ValueError for a blocking or non-UDP socket, or a backend the platform lacks.
    """

    def __init__(self, sock: socket.socket, *, backend: Backend = "auto", batch: int = MAX_BATCH) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("fan-out needs a UDP (SOCK_DGRAM) socket")
        if sock.getblocking():
            raise ValueError("fan-out needs a non-blocking socket (sock.setblocking(False))")
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be 1..{MAX_BATCH}")
        chosen = DEFAULT_BACKEND if backend == "auto" else backend
        if chosen not in ("sendmmsg", "sendto"):
            raise ValueError(f"unknown backend {backend!r}")
        if chosen == "sendmmsg" and _SENDMMSG is None:
            raise ValueError("sendmmsg is not available on this platform")
        self._sock = sock
        self._fd = sock.fileno()
        self._family = sock.family
        self._v6only = sock.family == socket.AF_INET6 and bool(
            sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        self._backend: Literal["sendmmsg", "sendto"] = chosen
        self._mmsg = chosen == "sendmmsg"
        self._call: SendMmsg = _SENDMMSG if _SENDMMSG is not None else _no_sendmmsg
        self._batch = batch
        self._keys: list[Hashable] = []
        self._slot: dict[Hashable, int] = {}
        self._addrs: list[tuple[Any, ...]] = []
        # The pending packet: destinations [_pos, _end) of the set, or of the subset copy when `_subset`.
        self._pos = self._end = 0
        self._subset = False
        self._subset_addrs: list[tuple[Any, ...]] = []
        self._blocked_by = 0
        self._sent = self._failed = self._blocked = self._discarded = 0
        self._data = b""
        self._iov = IoVec()
        self._buf = ctypes.create_string_buffer(MAX_DATAGRAM)
        self._pkt = memoryview(self._buf).cast("B")
        self._iov.iov_base = ctypes.addressof(self._buf)
        capacity = 64 if self._mmsg else 0
        self._table = MessageTable(capacity, ctypes.addressof(self._iov))
        self._scratch = MessageTable(capacity, ctypes.addressof(self._iov))

    # -- the destination set -------------------------------------------------------------------------------

    @property
    def backend(self) -> Literal["sendmmsg", "sendto"]:
        return self._backend

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    def keys(self) -> list[Hashable]:
        """The destination keys in send order (removals permute it)."""
        return list(self._keys)

    def address(self, key: Hashable) -> tuple[Any, ...]:
        """The sockaddr tuple ``key`` is sent to. Raises KeyError for an unknown key."""
        return self._addrs[self._slot[key]]

    def add(self, key: Hashable, address: tuple[Any, ...]) -> None:
        """Add a destination; it does not receive a packet already pending.

        Raises ValueError for a key already present or an address this socket cannot send to (nothing changes).
        """
        if key in self._slot:
            raise ValueError(f"destination {key!r} is already present")
        resolved, packed = self._prepare(address)
        slot = len(self._keys)
        if self._mmsg and slot == self._table.capacity:
            self._table = self._table.grown(2 * slot, slot)
        self._keys.append(key)
        self._addrs.append(resolved)
        self._slot[key] = slot
        if self._mmsg:
            self._table.store(slot, packed)

    def update(self, key: Hashable, address: tuple[Any, ...]) -> None:
        """Point ``key`` at a new address (the device roamed); a pending packet not yet sent to it goes there.

        Raises KeyError for an unknown key, ValueError for a bad address (nothing changes).
        """
        slot = self._slot[key]
        resolved, packed = self._prepare(address)
        self._addrs[slot] = resolved
        if self._mmsg:
            self._table.store(slot, packed)

    def remove(self, key: Hashable) -> None:
        """Remove a destination in O(1) by moving at most three others.

        A pending packet still reaches, exactly once, every remaining destination it was due to reach.
        Raises KeyError for an unknown key.
        """
        hole = self._slot.pop(key)
        pending = self._end and not self._subset
        # Slots are ordered [sent | pending | not part of the pending packet]; keep each region contiguous by
        # moving the last slot of every region after the hole into the hole, region by region.
        bounds = [self._pos, self._end, len(self._keys)] if pending else [len(self._keys)]
        for i, bound in enumerate(bounds):
            if bound > hole:
                if bound - 1 != hole:
                    self._move(bound - 1, hole)
                hole = bounds[i] = bound - 1
        if pending:
            self._pos, self._end = bounds[0], bounds[1]
        self._keys.pop()
        self._addrs.pop()

    # -- sending -------------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many destinations the pending packet has yet to reach (0: nothing is pending)."""
        return self._end - self._pos

    @property
    def blocked_by(self) -> int:
        """The errno that stopped the pending packet (EAGAIN or ENOBUFS), or 0 when nothing is pending."""
        return self._blocked_by if self._end else 0

    def send(self, packet: bytes | bytearray | memoryview) -> int:
        """Send ``packet`` to every destination; return how many destinations the kernel accepted it for.

        The packet is copied, so the caller may reuse its buffer at once. If the socket is full the send stops
        early and the rest is :attr:`pending` (see :meth:`resume`). A destination the network refuses
        (unreachable, EPERM...) is skipped and counted in ``statistics().failed``. Any other OSError is raised:
        the destinations before it have been sent to and the rest are discarded. Raises FanoutBusyError if a
        packet is pending, ValueError for a packet longer than 65535 bytes (nothing is sent then). If an
        exception from a signal handler (KeyboardInterrupt) interrupts it, the packet may have reached some,
        all or none of the destinations of the batch in flight, and a resume could repeat that batch:
        :meth:`discard` the packet instead.
        """
        count = len(self._keys)
        if self._mmsg and not self._end and 0 < count <= self._batch and type(packet) is not memoryview:
            size = len(packet)
            if size <= MAX_DATAGRAM:
                self._pkt[:size] = packet
                self._iov.iov_len = size
                done = self._call(self._fd, self._table.pointer, count, 0)
                if done == count:
                    self._sent += count
                    return count
                self._pos = self._blocked_by = 0
                self._subset = False
                self._end = count
                return self._drive(done)
        self._load(packet)
        self._subset = False
        self._end = count
        return self._drive()

    def send_to(self, packet: bytes | bytearray | memoryview, keys: Iterable[Hashable]) -> int:
        """Send ``packet`` to the listed destinations only (a retransmission); return how many were sent.

        Uses the addresses the keys have now; later changes to the set do not affect this packet. Raises
        KeyError for an unknown key before anything is sent; otherwise behaves as :meth:`send`.
        """
        if self._end:
            raise FanoutBusyError("a packet is still pending")
        slots = [self._slot[key] for key in keys]
        self._load(packet)
        if self._mmsg:
            if len(slots) > self._scratch.capacity:
                self._scratch = MessageTable(len(slots), self._scratch.iov_address)
            self._scratch.gather(self._table, slots)
        else:
            self._subset_addrs = [self._addrs[slot] for slot in slots]
        self._subset = True
        self._end = len(slots)
        return self._drive()

    def resume(self) -> int:
        """Continue the pending packet from the first destination not yet served; return how many were sent.

        Returns 0 when nothing is pending. May stop early again, and fails as :meth:`send` does.
        """
        return self._drive() if self._end else 0

    def discard(self) -> int:
        """Give up the pending packet; return how many destinations it will not reach."""
        dropped = self._end - self._pos
        self._discarded += dropped
        self._pos = self._end = 0
        return dropped

    async def wait_sent(self, *, retry_after: float = 0.001) -> None:
        """Wait until the pending packet has reached every destination (at once if nothing is pending).

        Waits for writability after ``EAGAIN`` and sleeps ``retry_after`` seconds after ``ENOBUFS``; never
        blocks the event loop. If cancelled, the packet may have reached some, all or none of the destinations
        still pending; the rest are discarded so that the next send can go ahead. An OSError from resuming
        propagates with the same effect.
        """
        try:
            while self._end:
                if self._blocked_by == errno.ENOBUFS:
                    await anyio.sleep(retry_after)
                else:
                    await anyio.wait_writable(self._sock)
                self._drive()
        finally:
            if self._end:
                self.discard()

    def statistics(self) -> FanoutStatistics:
        """A snapshot of the counters."""
        return FanoutStatistics(len(self._keys), self._end - self._pos, self._sent, self._failed, self._blocked,
                                self._discarded)

    # -- internals -----------------------------------------------------------------------------------------

    def _load(self, packet: bytes | bytearray | memoryview) -> None:
        if self._end:
            raise FanoutBusyError("a packet is still pending")
        if type(packet) is memoryview and (packet.format != "B" or packet.ndim != 1):
            packet = packet.cast("B")
        size = len(packet)
        if size > MAX_DATAGRAM:
            raise ValueError(f"a packet of {size} bytes does not fit in a UDP datagram")
        if self._mmsg:
            self._pkt[:size] = packet
            self._iov.iov_len = size
        else:
            self._data = bytes(packet)
        self._pos = self._blocked_by = 0

    def _drive(self, done: int | None = None) -> int:
        """Send the pending packet on; ``done`` is the result of a sendmmsg call already made at ``_pos``."""
        if not self._mmsg:
            return self._drive_sendto()
        call = self._call
        pos, end, fd, batch = self._pos, self._end, self._fd, self._batch
        table = self._scratch if self._subset else self._table
        sent = 0
        while pos < end:
            if done is None:
                done = call(fd, table.at(pos), min(end - pos, batch), 0)
            if done > 0:
                pos += done
                sent += done
                self._pos = pos
                done = None
                continue
            err = ctypes.get_errno() if done < 0 else errno.EAGAIN
            done = None
            if err == errno.EINTR:
                continue
            if err in _BLOCKED:
                self._blocked_by = err
                self._blocked += 1
                break
            if err not in _PER_DESTINATION:
                self._fail(sent, end - pos)
                raise OSError(err, os.strerror(err))
            pos += 1
            self._failed += 1
        return self._advance(pos, sent)

    def _drive_sendto(self) -> int:
        pos, end = self._pos, self._end
        addrs = self._subset_addrs if self._subset else self._addrs
        sendto, data = self._sock.sendto, self._data
        sent = 0
        while pos < end:
            try:
                sendto(data, addrs[pos])
            except OSError as exc:
                if exc.errno in _BLOCKED:
                    self._blocked_by = exc.errno or errno.EAGAIN
                    self._blocked += 1
                    break
                if exc.errno not in _PER_DESTINATION:
                    self._fail(sent, end - pos)
                    raise
                self._failed += 1
            else:
                sent += 1
            pos += 1
        return self._advance(pos, sent)

    def _advance(self, pos: int, sent: int) -> int:
        self._sent += sent
        if pos >= self._end:
            self._pos = self._end = 0
        else:
            self._pos = pos
        return sent

    def _fail(self, sent: int, dropped: int) -> None:
        self._sent += sent
        self._discarded += dropped
        self._pos = self._end = 0

    def _prepare(self, address: tuple[Any, ...]) -> tuple[tuple[Any, ...], bytes]:
        resolved = resolve_destination(self._family, self._v6only, address)
        return resolved, pack_sockaddr(self._family, resolved)

    def _move(self, src: int, dst: int) -> None:
        key = self._keys[dst] = self._keys[src]
        self._addrs[dst] = self._addrs[src]
        self._slot[key] = dst
        if self._mmsg:
            self._table.move(src, dst)
