"""Many different datagrams, each to its own address, in a few system calls: the control-plane half of sending.

:class:`~loa.streamer.fanout.Fanout` sends one packet to many destinations; control messages are the opposite
case, a different sealed datagram per device (an alert to every device of a province is one per device). Here a
list of ``(datagram, address)`` pairs goes out through ``sendmmsg(2)``, up to 1024 per call: the datagrams are
joined into one buffer (one copy, in C), the ``iovec`` table is filled from their lengths with numpy, and each
address is packed once and kept (a small cache, cleared when it grows past :data:`ADDRESS_CACHE`). Elsewhere, or
with ``backend="sendto"``, a ``sendto`` loop does the same more slowly.

The socket must be non-blocking; nothing here waits. :meth:`DatagramSender.send` returns how many of the pairs
it is done with, from the front: all of them, or fewer when the kernel takes no more (``EAGAIN``, ``ENOBUFS``;
:attr:`DatagramSender.blocked_by` says which) and the caller retries the rest once the socket is writable.
Failure semantics: a datagram the network refuses (unreachable, ``EPERM``, an ICMP error reported on the socket,
a bad address) is skipped and counted in ``failed``; it never stops the others. Nothing is raised for any
address or datagram, only ``ValueError`` for a socket that cannot be used.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from loa.streamer._sendmmsg import ADDR_SLOT, MMSG, IoVec, load_sendmmsg, pack_sockaddr, resolve_destination

__all__ = ["ADDRESS_CACHE", "MAX_BATCH", "DatagramSender"]

MAX_BATCH = 1024  # UIO_MAXIOV
ADDRESS_CACHE = 65_536

_SENDMMSG = load_sendmmsg()
_BLOCKED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
_IOVEC = np.dtype([("base", np.uintp), ("len", np.uintp)])
assert _IOVEC.itemsize == ctypes.sizeof(IoVec)


class DatagramSender:
    """Send ``(datagram, address)`` pairs from one non-blocking UDP socket (see the module docstring).

    ``backend`` is ``"sendmmsg"`` (Linux), ``"sendto"`` or ``"auto"``. Raises ValueError for a blocking or
    non-UDP socket, or a backend the platform lacks.
    """

    def __init__(self, sock: socket.socket, *, backend: Literal["auto", "sendmmsg", "sendto"] = "auto") -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("needs a UDP (SOCK_DGRAM) socket")
        if sock.getblocking():
            raise ValueError("needs a non-blocking socket")
        chosen = ("sendmmsg" if _SENDMMSG is not None else "sendto") if backend == "auto" else backend
        if chosen not in ("sendmmsg", "sendto") or (chosen == "sendmmsg" and _SENDMMSG is None):
            raise ValueError(f"backend {backend!r} is not available here")
        self.backend: Literal["sendmmsg", "sendto"] = chosen
        self._sock = sock
        self._fd = sock.fileno()
        self._family = sock.family
        self._v6only = sock.family == socket.AF_INET6 and bool(
            sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        self._packed: dict[Any, bytes | None] = {}  # address -> sockaddr bytes padded to ADDR_SLOT (None: bad)
        self._resolved: dict[Any, Any] = {}  # address -> what sendto takes (sendto backend)
        self.blocked_by = 0
        self.sent = self.failed = self.blocked = 0
        if chosen == "sendmmsg":
            self._msgs = np.zeros(MAX_BATCH, dtype=MMSG)
            self._iov = np.zeros(MAX_BATCH, dtype=_IOVEC)
            self._names = np.zeros((MAX_BATCH, ADDR_SLOT), dtype=np.uint8)
            hdr = self._msgs["msg_hdr"]
            hdr["msg_name"] = self._names.ctypes.data + ADDR_SLOT * np.arange(MAX_BATCH, dtype=np.uint64)
            hdr["msg_iov"] = self._iov.ctypes.data + _IOVEC.itemsize * np.arange(MAX_BATCH, dtype=np.uint64)
            hdr["msg_iovlen"] = 1
            self._namelen = hdr["msg_namelen"]
            self._address = self._msgs.ctypes.data

    def send(self, items: Sequence[tuple[bytes, Any]]) -> int:
        """Send the pairs in order; return how many, from the front, are done with (sent, or skipped as failed).

        Fewer than ``len(items)`` means the socket is full: :attr:`blocked_by` is ``EAGAIN`` or ``ENOBUFS``
        (0 otherwise); send the rest later.
        """
        self.blocked_by = 0
        if self.backend == "sendto":
            return self._send_sendto(items)
        done = 0
        while done < len(items):
            step = self._send_batch(items[done : done + MAX_BATCH])
            done += step
            if self.blocked_by:
                break
        return done

    def _pack(self, address: Any) -> bytes | None:
        packed = self._packed.get(address)
        if packed is None and address not in self._packed:
            if len(self._packed) >= ADDRESS_CACHE:
                self._packed.clear()
            try:
                raw = pack_sockaddr(self._family, resolve_destination(self._family, self._v6only, address))
            except (ValueError, OSError, TypeError):
                packed = None
            else:
                packed = raw.ljust(ADDR_SLOT, b"\0")
            self._packed[address] = packed
        return packed

    def _send_batch(self, items: Sequence[tuple[bytes, Any]]) -> int:
        """One batch of at most MAX_BATCH: pairs with a bad address are skipped first (counted as failed)."""
        pack = self._pack
        datagrams: list[bytes] = []
        names: list[bytes] = []
        keep: list[int] = []  # index in items of each datagram kept
        bad: list[int] = []
        for index, (data, address) in enumerate(items):
            name = pack(address)
            if name is None:
                self.failed += 1
                bad.append(index)
                continue
            datagrams.append(data)
            names.append(name)
            keep.append(index)
        count = len(datagrams)
        if not count:
            return len(items)
        buffer = b"".join(datagrams)
        lengths = np.fromiter(map(len, datagrams), dtype=np.uintp, count=count)
        base = ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value or 0
        iov = self._iov[:count]
        iov["len"] = lengths
        iov["base"][0] = base
        if count > 1:
            np.cumsum(lengths[:-1], out=iov["base"][1:])
            iov["base"][1:] += base
        self._names[:count] = np.frombuffer(b"".join(names), dtype=np.uint8).reshape(count, ADDR_SLOT)
        self._namelen[:count] = 16 if self._family == socket.AF_INET else 28
        sendmmsg = _SENDMMSG
        assert sendmmsg is not None
        pos = 0
        while pos < count:
            result = sendmmsg(self._fd, ctypes.c_void_p(self._address + pos * MMSG.itemsize), count - pos, 0)
            if result > 0:
                pos += result
                self.sent += result
                continue
            err = ctypes.get_errno() if result < 0 else errno.EAGAIN
            if err == errno.EINTR:
                continue
            if err in _BLOCKED:
                self.blocked_by = err
                self.blocked += 1
                break
            pos += 1  # that datagram only: unreachable, refused, an ICMP error reported on the socket...
            self.failed += 1
        del buffer  # the kernel has copied what it took
        if pos >= count:
            return len(items)
        resume = keep[pos]
        self.failed -= sum(1 for index in bad if index > resume)  # not done with yet: counted when retried
        return resume

    def _send_sendto(self, items: Sequence[tuple[bytes, Any]]) -> int:
        sendto = self._sock.sendto
        for index, (data, address) in enumerate(items):
            try:
                target = self._resolved.get(address)
                if target is None:
                    if len(self._resolved) >= ADDRESS_CACHE:
                        self._resolved.clear()
                    target = self._resolved[address] = resolve_destination(self._family, self._v6only, address)
                sendto(data, target)
            except (BlockingIOError, InterruptedError):
                self.blocked_by = errno.EAGAIN
                self.blocked += 1
                return index
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.blocked_by = exc.errno
                    self.blocked += 1
                    return index
                self.failed += 1
            except (ValueError, TypeError):
                self.failed += 1
            else:
                self.sent += 1
        return len(items)
