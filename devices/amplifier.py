"""The simulated amplifier (PROTOCOL.md sections 4.4 ``amp`` and 6.3): power, warm-up and what is audible.

It is on while ``amp`` holds it on, while a broadcast is current, and from ``preroll`` before a scheduled
``play``; it is never switched off while a broadcast is current. After switching on it warms up for the
pre-roll (``amp.preroll_ms``, else ``config`` ``preroll_ms``): frames played meanwhile are not heard. Muting
silences everything but emergency-class audio.
"""

from __future__ import annotations

__all__ = ["Amplifier"]


class Amplifier:
    """``on_at``: the local time it was switched on (None: off)."""

    __slots__ = ("on_at",)

    def __init__(self) -> None:
        self.on_at: float | None = None

    def update(self, now: float, *, wanted: bool, keep: bool = False) -> None:
        """Switch on if ``wanted``; off if not wanted and nothing asks to ``keep`` it (a coming programme)."""
        if wanted and self.on_at is None:
            self.on_at = now
        elif not wanted and not keep:
            self.on_at = None

    def state(self, now: float, preroll_s: float) -> str:
        """``"off"``, ``"warming"`` or ``"on"`` as telemetry reports it."""
        if self.on_at is None:
            return "off"
        return "warming" if now < self.on_at + preroll_s else "on"

    def audible(self, at: float, preroll_s: float, *, muted: bool, emergency: bool) -> bool:
        """Whether a frame played at ``at`` is heard."""
        if self.on_at is None or at < self.on_at + preroll_s:
            return False
        return emergency or not muted
