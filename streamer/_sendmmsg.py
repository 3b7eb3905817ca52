"""The C side of the fan-out: ``sendmmsg(2)`` through ctypes, and the ``mmsghdr``/``sockaddr`` layouts.

The structures are declared with :mod:`ctypes` so that their sizes and offsets follow the platform ABI, and the
fan-out keeps them in numpy arrays built from those declarations (``numpy.dtype(MmsgHdr)``). Socket addresses
are packed into fixed 32-byte slots, large enough for ``sockaddr_in6``.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ADDR_SLOT",
    "IoVec",
    "MessageTable",
    "MmsgHdr",
    "MsgHdr",
    "SendMmsg",
    "load_sendmmsg",
    "pack_sockaddr",
    "resolve_destination",
]

ADDR_SLOT = 32

_SOCKADDR_IN = struct.Struct("=H2s4s8x")
_SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")


class IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class MmsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint))


MMSG = np.dtype(MmsgHdr)


class MessageTable:
    """``capacity`` ``mmsghdr`` entries in one numpy array; entry i names address slot i, all share one iovec.

    Only the address slots and their lengths ever change after construction.
    """

    def __init__(self, capacity: int, iov_address: int) -> None:
        self.capacity = capacity
        self.iov_address = iov_address
        self.msgs: np.ndarray[Any, Any] = np.zeros(capacity, dtype=MMSG)
        self.names: np.ndarray[Any, Any] = np.zeros((capacity, ADDR_SLOT), dtype=np.uint8)
        hdr = self.msgs["msg_hdr"]
        hdr["msg_name"] = self.names.ctypes.data + ADDR_SLOT * np.arange(capacity, dtype=np.uint64)
        hdr["msg_iov"] = iov_address
        hdr["msg_iovlen"] = 1
        self.namelen: np.ndarray[Any, Any] = hdr["msg_namelen"]
        self._bytes = self.names.reshape(-1).data
        self.address: int = self.msgs.ctypes.data
        self.pointer = ctypes.c_void_p(self.address)

    def at(self, index: int) -> ctypes.c_void_p:
        """Pointer to entry ``index``, for sendmmsg."""
        return self.pointer if index == 0 else ctypes.c_void_p(self.address + index * MMSG.itemsize)

    def store(self, slot: int, packed: bytes) -> None:
        offset = slot * ADDR_SLOT
        self._bytes[offset : offset + len(packed)] = packed
        self.namelen[slot] = len(packed)

    def move(self, src: int, dst: int) -> None:
        self._bytes[dst * ADDR_SLOT : (dst + 1) * ADDR_SLOT] = self._bytes[src * ADDR_SLOT : (src + 1) * ADDR_SLOT]
        self.namelen[dst] = self.namelen[src]

    def gather(self, source: MessageTable, slots: Sequence[int]) -> None:
        """Copy ``source``'s addresses at ``slots`` into entries 0..len(slots)-1 (capacity must suffice)."""
        index = np.fromiter(slots, dtype=np.intp, count=len(slots))
        self.names[: len(slots)] = source.names[index]
        self.namelen[: len(slots)] = source.namelen[index]

    def grown(self, capacity: int, count: int) -> MessageTable:
        """A larger table holding the first ``count`` addresses of this one."""
        table = MessageTable(capacity, self.iov_address)
        table.names[:count] = self.names[:count]
        table.namelen[:count] = self.namelen[:count]
        return table


SendMmsg = Callable[[int, ctypes.c_void_p, int, int], int]


def load_sendmmsg() -> SendMmsg | None:
    """Return libc's ``sendmmsg(fd, msgvec, vlen, flags)``, or None where the platform lacks it.

    The returned function releases the GIL while it runs and leaves ``errno`` in ``ctypes.get_errno()``.
    ``msgvec`` must be a ``ctypes.c_void_p``; the other arguments are plain ints (C ``int``). Declaring no
    argument types keeps the call cheap: converting a Python int to a pointer on every call costs more than
    the rest of the call's Python overhead.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    func.restype = ctypes.c_int
    sendmmsg: SendMmsg = func
    return sendmmsg


def resolve_destination(family: int, v6only: bool, address: tuple[object, ...]) -> tuple[object, ...]:
    """Turn ``(host, port[, flowinfo, scope_id])`` into the sockaddr tuple a socket of ``family`` sends to.

    The host must be a numeric address (no name is ever resolved). On an ``AF_INET6`` socket an IPv4 host is
    written as its IPv4-mapped IPv6 address, unless the socket is ``IPV6_V6ONLY``.

    Raises ValueError for a malformed address, a non-numeric host, or a family the socket cannot reach.
    """
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ValueError(f"destination must be (host, port) or (host, port, flowinfo, scope_id): {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"bad destination {address!r}")
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        is_v4 = False
    else:
        is_v4 = True
    if family == socket.AF_INET:
        if not is_v4:
            raise ValueError(f"an AF_INET socket cannot send to {host!r} (not a numeric IPv4 address)")
        return (host, port)
    if family != socket.AF_INET6:
        raise ValueError(f"unsupported socket family {family!r}")
    if is_v4:
        if v6only:
            raise ValueError(f"an IPV6_V6ONLY socket cannot send to {host!r}")
        host = "::ffff:" + host
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"bad destination {address!r}: not a numeric IP address ({exc})") from None
    resolved: tuple[object, ...] = tuple(infos[0][4])
    if len(address) == 4:
        flowinfo, scope_id = address[2], address[3]
        if not isinstance(flowinfo, int) or not isinstance(scope_id, int):
            raise ValueError(f"bad destination {address!r}")
        resolved = (resolved[0], port, flowinfo, scope_id or resolved[3])
    return resolved


def pack_sockaddr(family: int, resolved: tuple[object, ...]) -> bytes:
    """Pack a tuple from :func:`resolve_destination` as the C ``sockaddr_in``/``sockaddr_in6`` (Linux layout)."""
    host, port = resolved[0], resolved[1]
    assert isinstance(host, str)
    assert isinstance(port, int)
    port_be = port.to_bytes(2, "big")
    if family == socket.AF_INET:
        return _SOCKADDR_IN.pack(socket.AF_INET, port_be, socket.inet_pton(socket.AF_INET, host))
    flowinfo, scope_id = resolved[2], resolved[3]
    assert isinstance(flowinfo, int)
    assert isinstance(scope_id, int)
    raw = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    return _SOCKADDR_IN6.pack(socket.AF_INET6, port_be, flowinfo.to_bytes(4, "big"), raw, scope_id)
