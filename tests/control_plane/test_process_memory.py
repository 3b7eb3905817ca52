"""Freed memory handed back to the system (loa.control_plane.process_memory), measured on this process."""

from __future__ import annotations

import os

import pytest

from loa.control_plane.process_memory import _libc, give_back

pytestmark = pytest.mark.skipif(_libc() is None, reason="needs the GNU C library (malloc_trim, mallopt)")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_give_back_returns_the_free_pages_between_live_allocations() -> None:
    """80 MiB of 2 KiB blocks (the C allocator's, not the interpreter's arenas), one kept in every 32: the free
    space lies between live blocks, where glibc does not trim by itself; give_back returns most of it."""
    blocks = [bytes(2048) + bytes([i % 251]) for i in range(40_000)]
    kept = blocks[::32]
    del blocks
    before = resident_bytes()
    assert give_back()
    after = resident_bytes()
    assert before - after > 40 * 2**20, (before, after)
    assert len(kept) == 1250  # still alive, and intact
    assert all(block[-1] == (32 * i) % 251 for i, block in enumerate(kept))
