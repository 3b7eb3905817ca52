"""The retransmission buffer of one RTP stream (PROTOCOL.md section 5.5.3), sans-I/O.

A ring of 2^k slots, k the smallest with 2^k >= ``RTX_BUFFER`` / 10 ms (256 slots for 2 s), indexed by sequence
number modulo its size. Each slot holds the sequence number, the send time and the *protected* bytes of one
packet, so a NACK is answered with exactly the bytes every member received, and a stale slot (an older packet
that happens to share the index) is never mistaken for the one asked for. Each slot also remembers when it was
last resent to which device, so one packet goes to one device at most once per that device's round-trip time.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["MIN_FRAME_S", "RTX_BUFFER_S", "RetransmitRing", "RingStatistics"]

RTX_BUFFER_S = 2.0
MIN_FRAME_S = 0.010


@dataclass(frozen=True, slots=True)
class RingStatistics:
    stored: int
    resent: int
    missing: int
    rate_limited: int


class RetransmitRing:
    """Protected packets of the last ``horizon`` seconds, by 16-bit sequence number."""

    __slots__ = ("_data", "_horizon", "_mask", "_missing", "_rate_limited", "_resent", "_seq", "_stored",
                 "_time", "_when")

    def __init__(self, horizon: float = RTX_BUFFER_S, min_frame: float = MIN_FRAME_S) -> None:
        if not horizon > 0 or not min_frame > 0:
            raise ValueError("horizon and min_frame must be positive")
        size = 1
        while size * min_frame < horizon:
            size *= 2
        self._mask = size - 1
        self._horizon = horizon
        self._seq = [-1] * size
        self._time = [0.0] * size
        self._data = [b""] * size
        self._when: list[dict[Hashable, float] | None] = [None] * size
        self._stored = self._resent = self._missing = self._rate_limited = 0

    @property
    def capacity(self) -> int:
        return self._mask + 1

    def store(self, seq: int, data: bytes, now: float) -> None:
        """Keep the protected packet ``seq`` sent at ``now`` (replacing whatever held its slot)."""
        slot = seq & self._mask
        self._seq[slot] = seq
        self._time[slot] = now
        self._data[slot] = data
        self._when[slot] = None
        self._stored += 1

    def get(self, seq: int, now: float) -> bytes | None:
        """The stored bytes of ``seq`` if it was sent less than ``horizon`` ago, else None."""
        slot = seq & self._mask
        if self._seq[slot] != seq or now - self._time[slot] > self._horizon:
            return None
        return self._data[slot]

    def resend(self, seq: int, device: Hashable, now: float, interval: float) -> bytes | None:
        """The bytes to resend of ``seq`` to ``device``, or None: not held (counted as missing), or resent to
        that device less than ``interval`` seconds ago (counted as rate-limited)."""
        data = self.get(seq, now)
        if data is None:
            self._missing += 1
            return None
        slot = seq & self._mask
        when = self._when[slot]
        if when is None:
            when = self._when[slot] = {}
        last = when.get(device)
        if last is not None and now - last < interval:
            self._rate_limited += 1
            return None
        when[device] = now
        self._resent += 1
        return data

    def statistics(self) -> RingStatistics:
        return RingStatistics(self._stored, self._resent, self._missing, self._rate_limited)
