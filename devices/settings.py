"""A device's settings (PROTOCOL.md sections 4.4 and 4.6) and the per-key command order, sans-I/O.

:class:`Settings` holds what persists across reboots: ``config`` values (defaults from section 4.6 until set),
volume, mute, amplifier hold and pre-roll, source, FM presets and board items. :class:`CommandOrder` is the
rule that makes commands idempotent although they arrive in any order: per state key, a command with an ``id``
lower than the last one applied is ignored; the memory is reset when the server's ``boot`` changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from loa.protocol.control import CONFIG_FIELDS, Board, ConfigValues, FmPreset

__all__ = ["DEFAULT_FM_KHZ", "CommandOrder", "Settings"]

DEFAULT_FM_KHZ = 100_000
DEFAULT_VOLUME = 80


def _defaults() -> dict[str, Any]:
    return {name: f.default for name, f in CONFIG_FIELDS.items() if f.default is not None}


@dataclass(slots=True)
class Settings:
    """Persistent settings. ``config`` maps section 4.6 keys to values (absent: never set, no default)."""

    config: dict[str, Any] = field(default_factory=_defaults)
    volume_level: int = DEFAULT_VOLUME
    muted: bool = False
    amp_held: bool = False
    amp_preroll_ms: int | None = None  # set by `amp`; replaces config preroll_ms
    source: str = "ip"
    source_khz: int | None = None
    fm_presets: tuple[FmPreset, ...] = ()
    boards: dict[int, Board] = field(default_factory=dict)

    def apply_config(self, values: ConfigValues, keys: set[str] | None = None) -> list[str]:
        """Set the keys ``values`` carries (only those in ``keys`` when given); returns the keys set."""
        changed = []
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if value is None or (keys is not None and f.name not in keys):
                continue
            self.config[f.name] = value
            changed.append(f.name)
        return changed

    def get(self, key: str) -> Any:
        return self.config.get(key)

    @property
    def volume(self) -> int:
        """The level applied: ``volume_level`` clamped into [vol_min, vol_max]."""
        lo, hi = int(self.config.get("vol_min", 0)), int(self.config.get("vol_max", 100))
        return min(max(self.volume_level, lo), max(lo, hi))

    @property
    def preroll_ms(self) -> int:
        return int(self.amp_preroll_ms if self.amp_preroll_ms is not None else self.config.get("preroll_ms", 0))

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(self.config.get("zones") or ())

    @property
    def fallback_khz(self) -> int | None:
        khz = self.config.get("fallback_khz")
        if khz is not None:
            return int(khz)
        return self.fm_presets[0].freq_khz if self.fm_presets else None

    @property
    def tuned_khz(self) -> int:
        """The frequency the simulated FM tuner is on."""
        if self.source == "fm" and self.source_khz is not None:
            return self.source_khz
        return self.fallback_khz or DEFAULT_FM_KHZ


class CommandOrder:
    """The id of the last command applied per state key, since the server's current boot (section 4.4)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[tuple[str, object], int] = {}

    def accept(self, key: tuple[str, object], msg_id: int | None) -> bool:
        """Whether a command with ``msg_id`` for ``key`` applies now (and remember it if so)."""
        if msg_id is None:
            return True
        last = self._last.get(key)
        if last is not None and msg_id < last:
            return False
        self._last[key] = msg_id
        if len(self._last) > 65536:  # bounded: forget the oldest half (ids only ever grow within a boot)
            for old in list(self._last)[:32768]:
                del self._last[old]
        return True

    def accept_keys(self, keys: list[tuple[str, object]], msg_id: int | None) -> set[tuple[str, object]]:
        """The subset of ``keys`` a command with ``msg_id`` applies to."""
        return {key for key in keys if self.accept(key, msg_id)}

    def reset(self) -> None:
        self._last.clear()
