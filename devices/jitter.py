"""The jitter buffer of one RTP stream: a power-of-two ring keyed by 16-bit sequence number, sans-I/O.

Packets are stored by ``seq & mask``; each slot remembers its full sequence number, so a stale slot is never
taken for a newer packet. :attr:`JitterBuffer.head` is the next sequence number the output will take; anything
behind it has been played, concealed or skipped. Sequence numbers compare by RFC 1982 serial arithmetic
(``loa.protocol.rtptime.seq_diff``), so the ring follows the wrap from 65535 to 0.

Failure semantics: :meth:`JitterBuffer.insert` never raises; it classifies every packet (:class:`Insert`) and
stores only new ones within the window. A packet more than the ring's capacity ahead of the head means the
sender jumped (a restart, a long outage): the buffer forgets everything and starts again at that packet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from loa.protocol.rtptime import seq_add, seq_diff

__all__ = ["Insert", "JitterBuffer", "Slot", "capacity_for"]


class Insert(enum.Enum):
    NEW = "new"  # stored
    DUPLICATE = "duplicate"  # already held
    BEHIND = "behind"  # behind the head: already played, concealed or skipped
    RESYNC = "resync"  # too far ahead: the buffer was emptied and restarted at this packet


@dataclass(slots=True)
class Slot:
    """One received packet: ``samples`` is its Opus duration (48 kHz), ``arrival`` the local receive time."""

    seq: int
    ts: int
    payload: bytes
    samples: int
    arrival: float
    marker: bool


def capacity_for(delay_ms: int, frame_ms: int = 10) -> int:
    """Ring size holding ``delay_ms`` plus 2.5 s of audio in ``frame_ms`` frames (a power of two, 64..32768)."""
    frames = (delay_ms + 2500) // frame_ms + 1
    size = 64
    while size < frames and size < 32768:
        size *= 2
    return size


def _check_capacity(capacity: int) -> None:
    if capacity < 2 or capacity & (capacity - 1) or capacity > 32768:
        raise ValueError("capacity must be a power of two from 2 to 32768")


class JitterBuffer:
    """Packets of one SSRC waiting for their play time."""

    __slots__ = ("_count", "_mask", "_ring", "_taken", "head", "highest")

    def __init__(self, capacity: int = 512) -> None:
        _check_capacity(capacity)
        self._ring: list[Slot | None] = [None] * capacity
        self._mask = capacity - 1
        self._count = 0
        self._taken = False  # whether anything was taken since the buffer (re)started
        self.head: int | None = None  # next sequence number to take
        self.highest: int | None = None  # highest sequence number received

    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return self._mask + 1

    def insert(self, slot: Slot) -> Insert:
        """Store ``slot`` unless it is a duplicate or behind the head (see :class:`Insert`)."""
        seq = slot.seq
        head = self.head
        if head is None:
            self.head = self.highest = seq
        else:
            ahead = seq_diff(seq, head)
            if ahead < 0 and not self._taken and self.pending() - ahead <= self._mask:
                self.head = head = seq  # the stream's first packets arrived out of order: start earlier
                ahead = 0
            if ahead < 0:
                return Insert.BEHIND
            if ahead > self._mask:
                self.clear()
                self.head = self.highest = seq
                self._put(slot)
                return Insert.RESYNC
            held = self._ring[seq & self._mask]
            if held is not None and held.seq == seq:
                return Insert.DUPLICATE
            if self.highest is None or seq_diff(seq, self.highest) > 0:
                self.highest = seq
        self._put(slot)
        return Insert.NEW

    def _put(self, slot: Slot) -> None:
        index = slot.seq & self._mask
        if self._ring[index] is None:
            self._count += 1
        self._ring[index] = slot

    def get(self, seq: int) -> Slot | None:
        slot = self._ring[seq & self._mask]
        return slot if slot is not None and slot.seq == seq else None

    def take(self) -> tuple[int, Slot | None]:
        """Remove and return the head's sequence number and packet (None if it is missing); advance the head.

        Raises ``LookupError`` on an empty buffer that has never received a packet.
        """
        head = self.head
        if head is None:
            raise LookupError("the jitter buffer has no head yet")
        index = head & self._mask
        slot = self._ring[index]
        if slot is not None and slot.seq == head:
            self._ring[index] = None
            self._count -= 1
        else:
            slot = None
        self.head = seq_add(head, 1)
        self._taken = True
        if self.highest is not None and seq_diff(self.head, self.highest) > 1:
            self.highest = seq_add(self.head, -1)
        return head, slot

    def pending(self) -> int:
        """Sequence numbers from the head through the highest received (0 when nothing waits)."""
        if self.head is None or self.highest is None:
            return 0
        return max(0, seq_diff(self.highest, self.head) + 1)

    def next_present(self, seq: int, limit: int = 64) -> Slot | None:
        """The first held packet at ``seq`` or after it (at most ``limit`` numbers on, not past the highest)."""
        if self.highest is None:
            return None
        span = min(limit, seq_diff(self.highest, seq) + 1)
        for i in range(span):
            slot = self.get(seq_add(seq, i))
            if slot is not None:
                return slot
        return None

    def missing(self, first: int, last: int) -> list[int]:
        """Sequence numbers from ``first`` to ``last`` inclusive that are not held (in order)."""
        span = seq_diff(last, first) + 1
        seqs = (seq_add(first, i) for i in range(max(0, min(span, self._mask + 1))))
        return [seq for seq in seqs if self.get(seq) is None]

    def grow(self, capacity: int) -> None:
        """Make the ring ``capacity`` slots (a power of two, 2 to 32768, not smaller than now), keeping every
        packet held, the head and the highest."""
        _check_capacity(capacity)
        if capacity < self.capacity:
            raise ValueError(f"capacity must be a power of two, at least the current {self.capacity}")
        held = [slot for slot in self._ring if slot is not None]
        self._ring = [None] * capacity
        self._mask = capacity - 1
        for slot in held:
            self._ring[slot.seq & self._mask] = slot

    def clear(self) -> None:
        self._ring = [None] * (self._mask + 1)
        self._count = 0
        self._taken = False
        self.head = self.highest = None
