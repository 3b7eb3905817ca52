"""Handing freed memory back to the system in a long-running `loa serve` (GNU C library only; elsewhere nothing).

The server's live objects stay level over its life (`tests/streamer/test_core_memory.py`; `loa bench soak`'s
``py_blocks``), but the C allocator keeps what is freed: an alert to a province allocates tens of megabytes of
messages for a few seconds, and the pages they leave free are reused only by later allocations of a size that
fits, so resident memory climbs alert after alert while what is in use does not. Two measures, both standard
glibc interfaces called through ``ctypes``:

* :func:`limit_arenas` (``mallopt(M_ARENA_MAX)``) before any thread starts: every thread that allocates (the
  worker threads that decode audio and write to the database) would otherwise get an arena of its own, up to
  eight per processor, each keeping its own free pages after the thread is gone;
* :func:`give_back` (``malloc_trim(0)``), every :data:`GIVE_BACK_EVERY_S` from :func:`give_back_loop`: returns
  every whole free page inside the heaps to the system (``madvise``), not only the top of the heap that glibc
  trims by itself. It takes tens of milliseconds with a few hundred megabytes, so the loop runs it in a worker
  thread (``ctypes`` lets go of the interpreter's lock).

:func:`heap` (``mallinfo2``) and :func:`sqlite_bytes` (``sqlite3_memory_used``) say where resident memory is,
for ``/metrics``: bytes in use and free in the C allocator's heaps, and what SQLite holds (its page caches).

Failure semantics: none raises; on a C library without these functions they return False or None, and the loop
ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ARENAS", "GIVE_BACK_EVERY_S", "Heap", "give_back", "give_back_loop", "heap", "limit_arenas",
           "sqlite_bytes"]

ARENAS = 2
GIVE_BACK_EVERY_S = 30.0
_M_ARENA_MAX = -8  # malloc.h


class _MallInfo2(ctypes.Structure):  # struct mallinfo2, malloc.h (glibc 2.33 and later)
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@dataclass(frozen=True, slots=True)
class Heap:
    """The C allocator's heaps, all arenas: bytes handed out and not freed (``in_use``), free inside the heaps
    (``free``: what :func:`give_back` may return, page by page), and in blocks mapped on their own (``mapped``)."""

    in_use: int
    free: int
    mapped: int


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


@functools.cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    libc = _libc()
    try:
        function = libc.mallinfo2 if libc is not None else None  # glibc 2.33 and later
    except AttributeError:
        return None
    if function is not None:
        function.argtypes = []
        function.restype = _MallInfo2
    return function


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` allocation arenas for the process's threads (``mallopt(M_ARENA_MAX)``, as
    ``MALLOC_ARENA_MAX`` does; call before starting any): True if it took effect, False where the C library
    cannot or when the environment sets ``MALLOC_ARENA_MAX`` itself (its value stands).

    ``loa serve`` hands blocking work (an alert's audio, database writes) to worker threads that come and go, and
    by default glibc gives such threads arenas of their own (up to 8 per core) that keep memory after the thread
    is gone: in a soak of 500 devices with an alert every 40 s, resident memory rose 7.0 % in 4 minutes while the
    interpreter's live blocks stayed flat (-0.2 %); with two arenas it rose 2.4 % (SECURITY.md).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _libc()
    return libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1


def give_back() -> bool:
    """Return the free pages of every heap to the system now; False where the C library cannot."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)  # 1 when memory was released, 0 when there was none to release
    return True


def heap() -> Heap | None:
    """The C allocator's figures now (None where the C library cannot say)."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return None
    info = mallinfo2()
    return Heap(in_use=info.uordblks, free=info.fordblks, mapped=info.hblkhd)


@functools.cache
def _sqlite() -> ctypes.CDLL | None:
    """The SQLite library the ``sqlite3`` module uses, when it is a shared library already loaded here (another
    copy would count its own allocations, none of ours)."""
    import sqlite3  # noqa: F401 - loads it

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "libsqlite3" in line.rsplit("/", 1)[-1]}
    if len(paths) != 1:
        return None
    try:
        lib = ctypes.CDLL(paths.pop())
        lib.sqlite3_memory_used.argtypes = []
        lib.sqlite3_memory_used.restype = ctypes.c_int64
    except (OSError, AttributeError):
        return None
    return lib


def sqlite_bytes() -> int | None:
    """Bytes SQLite holds now, over every connection of the process (None where that cannot be read)."""
    lib = _sqlite()
    return None if lib is None else int(lib.sqlite3_memory_used())


async def give_back_loop(every_s: float = GIVE_BACK_EVERY_S) -> None:
    """:func:`give_back` every ``every_s`` seconds in a worker thread, until cancelled (or at once, where the C
    library cannot)."""
    import anyio

    if _libc() is None:
        return
    while True:
        await anyio.sleep(every_s)
        await anyio.to_thread.run_sync(give_back)
