"""The transport replay window (PROTOCOL.md section 3.7).

A receiver keeps the greatest counter it accepted, ``g``, and a bitmap of the ``REPLAY_WINDOW`` (1024) counters
``g - 1024 .. g - 1`` below it. Counter ``c`` is acceptable iff ``c < REJECT_AFTER_MESSAGES`` and either nothing
was accepted yet, ``c > g``, or ``1 <= g - c <= 1024`` and ``c`` is not marked. :meth:`ReplayWindow.check` only
looks; :meth:`ReplayWindow.accept` marks, and is called after the AEAD tag verified.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from loa.protocol.errors import ReplayError

__all__ = ["REJECT_AFTER_MESSAGES", "REPLAY_WINDOW", "ReplayWindow"]

REPLAY_WINDOW: Final = 1024
REJECT_AFTER_MESSAGES: Final = 1 << 60
_MASK: Final = (1 << (REPLAY_WINDOW + 1)) - 1


class ReplayWindow:
    """Sliding window over 64-bit counters. Bit ``i`` of the bitmap stands for counter ``greatest - i``."""

    __slots__ = ("_bitmap", "_greatest")

    def __init__(self) -> None:
        self._greatest = -1
        self._bitmap = 0

    @classmethod
    def from_state(cls, greatest: int | None, seen: Iterable[int] = ()) -> ReplayWindow:
        """A window whose greatest accepted counter is ``greatest`` and which has also accepted ``seen``
        (counters outside the window are ignored)."""
        window = cls()
        if greatest is not None:
            window.accept(greatest)
            for counter in seen:
                if 1 <= greatest - counter <= REPLAY_WINDOW:
                    window._bitmap |= 1 << (greatest - counter)
        return window

    @property
    def greatest(self) -> int | None:
        """The greatest counter accepted so far, or None."""
        return None if self._greatest < 0 else self._greatest

    def seen(self) -> list[int]:
        """The counters inside the window that are marked, ascending (for state export and tests)."""
        g, bits = self._greatest, self._bitmap
        return sorted(g - i for i in range(REPLAY_WINDOW + 1) if bits >> i & 1)

    def check(self, counter: int) -> None:
        """Raise ReplayError unless ``counter`` is acceptable now; never changes the window."""
        if not 0 <= counter < REJECT_AFTER_MESSAGES:
            raise ReplayError(f"counter {counter} is outside 0 .. 2^60 - 1")
        if counter > self._greatest:
            return
        age = self._greatest - counter
        if age > REPLAY_WINDOW:
            raise ReplayError(f"counter {counter} is older than the window")
        if self._bitmap >> age & 1:
            raise ReplayError(f"counter {counter} was already accepted")

    def accept(self, counter: int) -> bool:
        """Mark ``counter`` (checking it first); return True if it became the greatest accepted."""
        self.check(counter)
        if counter > self._greatest:
            shift = counter - self._greatest
            self._bitmap = 1 if shift > REPLAY_WINDOW else ((self._bitmap << shift) | 1) & _MASK
            self._greatest = counter
            return True
        self._bitmap |= 1 << (self._greatest - counter)
        return False
