"""A classic BPF filter on the server's UDP socket: the kernel drops what no datagram a server takes can be.

A server takes only two kinds of datagram (PROTOCOL.md sections 2.2, 3.1.2 and 3.14): a HandshakeInit, exactly
148 bytes starting ``01 01 00 00``, and a Transport message, 32 to 1200 bytes starting ``04 01 00 00``. Everything
else - oversize, truncated, another type (responses, cookie replies, beacons, bare RTP/RTCP, garbage), another
version, reserved bits set, an init of the wrong length - the server drops without answering, whatever else it
holds. :func:`attach` gives the socket a filter (``SO_ATTACH_FILTER``, Linux) that drops exactly those in the
kernel, before they are queued on the socket, woken for or copied to Python: a flood of junk then costs the
server nothing but the kernel's few instructions per datagram. What passes still gets every check of the
protocol layer (``mac1``, receiver index, replay, tag...), counted there by error name.

Counting: a datagram the filter drops never reaches the core, so it is not counted by error name; the kernel
counts it in the socket's drop counter (``sk_drops``, with datagrams dropped because the receive buffer was
full), which :func:`kernel_drops` reads (``SO_MEMINFO``; the ``drops`` column of ``/proc/net/udp``).

Where there is no ``SO_ATTACH_FILTER`` (not Linux) or the kernel refuses it, :func:`attach` returns False and the
socket is unchanged: the same datagrams are then dropped, and counted by name, by the core.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Final

from loa.protocol.datagram import MAX_DATAGRAM, TRANSPORT_OVERHEAD, HandshakeInit

__all__ = ["PROGRAM", "accepts", "attach", "detach", "kernel_drops"]

SO_ATTACH_FILTER: Final = 26  # asm-generic/socket.h (Python does not name them)
SO_DETACH_FILTER: Final = 27
SO_MEMINFO: Final = 55
_SK_MEMINFO_DROPS: Final = 8
_UDP_HEADER: Final = 8  # a UDP socket's filter sees the UDP header, then the payload

_INIT_HEADER: Final = 0x01010000  # type 1, version 1, reserved 0
_TRANSPORT_HEADER: Final = 0x04010000  # type 4, version 1, reserved 0

# BPF opcodes (linux/bpf_common.h)
_LD_W_ABS, _LD_W_LEN = 0x20, 0x80
_JEQ_K, _JGT_K, _JGE_K = 0x15, 0x25, 0x35
_RET_K = 0x06
_ACCEPT, _DROP = 0xFFFFFFFF, 0

#: The filter: ``(code, jt, jf, k)`` instructions of classic BPF.
PROGRAM: Final[tuple[tuple[int, int, int, int], ...]] = (
    (_LD_W_LEN, 0, 0, 0),                                              # 0: A = UDP header + payload length
    (_JGT_K, 7, 0, _UDP_HEADER + MAX_DATAGRAM),                        # 1: oversize -> drop
    (_JGE_K, 0, 6, _UDP_HEADER + TRANSPORT_OVERHEAD),                  # 2: shorter than any it takes -> drop
    (_LD_W_ABS, 0, 0, _UDP_HEADER),                                    # 3: A = type, version, reserved
    (_JEQ_K, 3, 0, _TRANSPORT_HEADER),                                 # 4: a transport -> accept
    (_JEQ_K, 0, 3, _INIT_HEADER),                                      # 5: not an init -> drop
    (_LD_W_LEN, 0, 0, 0),                                              # 6: an init:
    (_JEQ_K, 0, 1, _UDP_HEADER + HandshakeInit.SIZE),                  # 7: of another length -> drop
    (_RET_K, 0, 0, _ACCEPT),                                           # 8: accept the whole datagram
    (_RET_K, 0, 0, _DROP),                                             # 9: drop
)


def accepts(payload: bytes) -> bool:
    """What :data:`PROGRAM` decides for a UDP payload, in Python (the reference its tests compare with)."""
    if not TRANSPORT_OVERHEAD <= len(payload) <= MAX_DATAGRAM:
        return False
    header = int.from_bytes(payload[:4], "big")
    return header == _TRANSPORT_HEADER or (header == _INIT_HEADER and len(payload) == HandshakeInit.SIZE)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_CODE: Final = b"".join(struct.pack("=HBBI", *instruction) for instruction in PROGRAM)


def attach(sock: socket.socket) -> bool:
    """Give the UDP socket ``sock`` the filter; True if the kernel took it, False (socket unchanged) if this
    system has no socket filters or refused it."""
    if not sys.platform.startswith("linux") or sock.type != socket.SOCK_DGRAM:
        return False
    code = ctypes.create_string_buffer(_CODE, len(_CODE))  # the kernel copies it during setsockopt
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(len(PROGRAM), ctypes.addressof(code))))
    except OSError:
        return False
    return True


def detach(sock: socket.socket) -> bool:
    """Remove the socket's filter; False if it had none (or the system has no socket filters)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    except OSError:
        return False
    return True


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for ``sock`` so far (filtered, or its receive buffer full), or None where
    the system does not tell (``SO_MEMINFO`` is Linux 4.6 and later)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (_SK_MEMINFO_DROPS + 1))
    except OSError:
        return None
    if len(info) < 4 * (_SK_MEMINFO_DROPS + 1):
        return None
    return int(struct.unpack_from("=I", info, 4 * _SK_MEMINFO_DROPS)[0])
