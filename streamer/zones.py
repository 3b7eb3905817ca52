"""Zones as a tree (province > district > commune > hamlet, any depth) and which devices stand where.

The streamer addresses broadcasts to zones; a zone includes every zone below it. The same tree drives alert
targeting on devices: a device is given its zone *path* (root first) and an alert for any zone on that path
reaches it (PROTOCOL.md section 6.4).

Failure semantics: every mutation validates first and changes nothing when it raises :class:`ZoneError`
(unknown parent, duplicate code, a cycle, an empty code); lookups of unknown codes raise :class:`ZoneError` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["Zone", "ZoneError", "ZoneTree"]

MAX_CODE_LEN = 64


class ZoneError(ValueError):
    """A zone operation that would make the tree inconsistent, or names an unknown zone."""


@dataclass(frozen=True, slots=True)
class Zone:
    code: str
    name: str
    parent: str | None = None
    level: str | None = None


class ZoneTree:
    """A forest of zones keyed by code, with O(depth) ancestry and O(size of subtree) membership queries."""

    def __init__(self, zones: Iterable[Zone] = ()) -> None:
        self._zones: dict[str, Zone] = {}
        self._children: dict[str, list[str]] = {}
        self.add_all(zones)

    def __len__(self) -> int:
        return len(self._zones)

    def __contains__(self, code: object) -> bool:
        return code in self._zones

    def __iter__(self) -> Iterator[Zone]:
        return iter(self._zones.values())

    def add(self, zone: Zone) -> None:
        """Add one zone whose parent (if any) is already present."""
        self._check(zone, known=self._zones)
        self._insert(zone)

    def add_all(self, zones: Iterable[Zone]) -> None:
        """Add zones in any order (parents may come after children); all or nothing."""
        pending = {}
        for zone in zones:
            if zone.code in pending:
                raise ZoneError(f"zone {zone.code!r} is defined twice")
            pending[zone.code] = zone
        known = dict(self._zones)
        order: list[Zone] = []
        remaining = dict(pending)
        while remaining:
            progressed = False
            for code, zone in list(remaining.items()):
                if zone.parent is None or zone.parent in known:
                    self._check(zone, known=known)
                    known[code] = zone
                    order.append(zone)
                    del remaining[code]
                    progressed = True
            if not progressed:
                code, zone = next(iter(remaining.items()))
                if zone.parent in pending:
                    raise ZoneError(f"zones {sorted(remaining)} form a cycle through their parents")
                raise ZoneError(f"zone {code!r} names an unknown parent {zone.parent!r}")
        for zone in order:
            self._insert(zone)

    def _check(self, zone: Zone, *, known: dict[str, Zone]) -> None:
        if not zone.code or len(zone.code) > MAX_CODE_LEN or zone.code != zone.code.strip():
            raise ZoneError(f"zone code {zone.code!r} must be 1-{MAX_CODE_LEN} characters without outer spaces")
        if zone.code in known:
            raise ZoneError(f"zone {zone.code!r} already exists")
        if zone.parent is not None and zone.parent not in known:
            raise ZoneError(f"zone {zone.code!r} names an unknown parent {zone.parent!r}")

    def _insert(self, zone: Zone) -> None:
        self._zones[zone.code] = zone
        self._children.setdefault(zone.code, [])
        if zone.parent is not None:
            self._children[zone.parent].append(zone.code)

    def remove(self, code: str) -> Zone:
        """Remove a zone that has no zones below it. ZoneError if unknown or not a leaf."""
        zone = self.get(code)
        if self._children[code]:
            raise ZoneError(f"zone {code!r} still has zones below it")
        del self._zones[code], self._children[code]
        if zone.parent is not None:
            self._children[zone.parent].remove(code)
        return zone

    def move(self, code: str, parent: str | None) -> Zone:
        """Put ``code`` (and everything below it) under ``parent`` (None: a root). ZoneError for an unknown zone
        or a move below itself."""
        zone = self.get(code)
        if parent is not None and code in self.path(parent):
            raise ZoneError(f"zone {code!r} cannot move below itself ({parent!r})")
        if zone.parent is not None:
            self._children[zone.parent].remove(code)
        moved = Zone(zone.code, zone.name, parent, zone.level)
        self._zones[code] = moved
        if parent is not None:
            self._children[parent].append(code)
        return moved

    def get(self, code: str) -> Zone:
        try:
            return self._zones[code]
        except KeyError:
            raise ZoneError(f"unknown zone {code!r}") from None

    def path(self, code: str) -> tuple[str, ...]:
        """Codes from the root down to ``code`` (what a device receives as its zone path)."""
        out = [self.get(code).code]
        parent = self._zones[code].parent
        while parent is not None:
            out.append(parent)
            parent = self._zones[parent].parent
        return tuple(reversed(out))

    def is_within(self, code: str, ancestor: str) -> bool:
        """True if ``code`` is ``ancestor`` or lies below it."""
        self.get(ancestor)
        return ancestor in self.path(code)

    def subtree(self, code: str) -> set[str]:
        """``code`` and every zone below it."""
        self.get(code)
        out: set[str] = set()
        stack = [code]
        while stack:
            current = stack.pop()
            out.add(current)
            stack.extend(self._children[current])
        return out

    def covering(self, codes: Iterable[str]) -> set[str]:
        """Every zone within any of ``codes`` (a broadcast's target zones, expanded)."""
        out: set[str] = set()
        for code in codes:
            out |= self.subtree(code)
        return out

    def roots(self) -> list[Zone]:
        return [z for z in self._zones.values() if z.parent is None]
