"""The media watchdog (PROTOCOL.md section 5.6), sans-I/O.

While a live broadcast is current, the watchdog fires when no packet of it arrived for ``watchdog_ms``
(counted from the last packet, or from the moment the broadcast became current); the device then falls back
(``"local"``, ``"fm"`` or ``"silence"``, section 4.6) and reports the fault ``"watchdog"``. The first packet that
arrives again clears it. :meth:`Watchdog.fallback` resolves the setting against what the device has: without an
FM receiver ``"fm"`` is silence, without stored content ``"local"`` is FM.
"""

from __future__ import annotations

from typing import Final

from loa.protocol.control import CONFIG_FIELDS

__all__ = ["DEFAULT_WATCHDOG_MS", "Watchdog"]

_default = CONFIG_FIELDS["watchdog_ms"].default
assert isinstance(_default, int)
DEFAULT_WATCHDOG_MS: Final[int] = _default  # section 4.6


class Watchdog:
    """State of the watchdog for the current live broadcast."""

    __slots__ = ("armed_at", "fired", "fired_at", "fires")

    def __init__(self) -> None:
        self.armed_at: float | None = None  # the current broadcast is live and watched since then
        self.fired = False
        self.fired_at: float | None = None
        self.fires = 0

    def arm(self, now: float) -> None:
        """A live broadcast became current (or resumed): watch it from ``now``."""
        self.armed_at = now
        self.fired = False
        self.fired_at = None

    def disarm(self) -> bool:
        """No live broadcast is current; returns whether the watchdog had fired (its fault clears)."""
        fired = self.fired
        self.armed_at = None
        self.fired = False
        self.fired_at = None
        return fired

    def deadline(self, last_packet: float | None, watchdog_s: float) -> float | None:
        if self.armed_at is None or self.fired:
            return None
        since = self.armed_at if last_packet is None else max(self.armed_at, last_packet)
        return since + watchdog_s

    def check(self, now: float, last_packet: float | None, watchdog_s: float) -> bool:
        """Fire if the deadline passed; returns True when it fires now."""
        deadline = self.deadline(last_packet, watchdog_s)
        if deadline is None or now < deadline:
            return False
        self.fired = True
        self.fired_at = now
        self.fires += 1
        return True

    def packet(self) -> bool:
        """A packet of the watched broadcast arrived; returns True when this clears a fired watchdog."""
        if not self.fired:
            return False
        self.fired = False
        self.fired_at = None
        return True

    @staticmethod
    def fallback(setting: str, *, has_fm: bool, has_content: bool) -> str:
        """What actually plays: ``"local"``, ``"fm"`` or ``"silence"``."""
        if setting == "local" and not has_content:
            setting = "fm"
        if setting == "fm" and not has_fm:
            setting = "silence"
        return setting
