"""When to ask for a lost packet again (PROTOCOL.md section 5.5.2), per RTP stream, sans-I/O.

* A gap (a packet arrives more than one after the highest received) NACKs, at once, every missing number whose
  play time is more than one RTT away; numbers more than ``RTX_BUFFER`` (2 s) of audio behind the highest are
  never NACKed.
* A number still missing may be NACKed a second time, no sooner than ``max(1.5 × RTT, 20 ms)`` after the first
  and only while its play time is more than one RTT away; never a third time.
* A number stops being tracked when it arrives, when its FEC copy was used or when it was played or concealed.

Times are local seconds; play times are supplied by the caller (None while it cannot place the packet yet, in
which case the packet is NACKed as if it had time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["RTX_BUFFER_S", "NackScheduler"]

RTX_BUFFER_S = 2.0
MAX_TRACKED = 512


@dataclass(slots=True)
class _Tracked:
    first: float
    play_at: float | None
    count: int


class NackScheduler:
    """The missing sequence numbers of one stream and when to NACK each again."""

    __slots__ = ("_tracked", "sent")

    def __init__(self) -> None:
        self._tracked: dict[int, _Tracked] = {}
        self.sent = 0  # sequence numbers NACKed (first and second requests)

    def __len__(self) -> int:
        return len(self._tracked)

    def on_gap(self, missing: Iterable[tuple[int, float | None]], now: float, rtt: float) -> list[int]:
        """Numbers found missing at ``now`` with their play times; returns those to NACK now."""
        out: list[int] = []
        for seq, play_at in missing:
            if seq in self._tracked or len(self._tracked) >= MAX_TRACKED:
                continue
            if play_at is not None and play_at - now <= rtt:
                continue
            self._tracked[seq] = _Tracked(now, play_at, 1)
            out.append(seq)
        self.sent += len(out)
        return out

    def resolved(self, seq: int) -> None:
        """``seq`` arrived, was recovered by FEC, or was played or concealed: stop asking for it."""
        self._tracked.pop(seq, None)

    def next_deadline(self, rtt: float) -> float | None:
        wait = max(1.5 * rtt, 0.020)
        return min((t.first + wait for t in self._tracked.values() if t.count == 1), default=None)

    def due(self, now: float, rtt: float) -> list[int]:
        """Numbers to NACK a second time at ``now``; forgets numbers whose time for a NACK has passed."""
        wait = max(1.5 * rtt, 0.020)
        out: list[int] = []
        for seq, t in list(self._tracked.items()):
            if t.count >= 2:
                continue
            if t.play_at is not None and t.play_at - now <= rtt:
                t.count = 2  # too late to ask again; keep it until it arrives or is played
                continue
            if now >= t.first + wait:
                t.count = 2
                out.append(seq)
        self.sent += len(out)
        return out

    def clear(self) -> None:
        self._tracked.clear()
