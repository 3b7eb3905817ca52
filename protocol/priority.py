"""Priority, preemption and resumption of broadcasts at a device (spec sections 6.1-6.2), sans-I/O.

A broadcast's rank is ``(class, level)`` compared lexicographically, ``rank = cls × 4 + lvl``.
:class:`Arbiter` holds at most one *current* broadcast and a list of *waiting* ones, and turns arrivals and ends
into events (frozen dataclasses) that say what the output must do. The decisions are the literal tables
``ARRIVAL`` (what an arriving broadcast does against the current one) and ``FATE`` (what a broadcast that
cannot play now becomes, by its policy). The server runs the same arbiter per device to decide which streams
the device would play.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from loa.protocol.errors import LocalProtocolError

__all__ = [
    "ARRIVAL",
    "FATE",
    "Arbiter",
    "Class",
    "Dropped",
    "Ended",
    "Event",
    "Fate",
    "Level",
    "Outcome",
    "Policy",
    "Preempted",
    "Relation",
    "Resumed",
    "Started",
    "Waiting",
    "rank",
]


class Class(enum.IntEnum):
    NORMAL = 0
    PRIORITY = 1
    EMERGENCY = 2


class Level(enum.IntEnum):
    COMMUNE = 0
    DISTRICT = 1
    PROVINCE = 2
    NATIONAL = 3


class Policy(enum.StrEnum):
    RESUME = "resume"
    DROP = "drop"


def rank(cls: int, lvl: int) -> int:
    """``cls × 4 + lvl``; raises :class:`LocalProtocolError` for a class outside 0..2 or a level outside 0..3."""
    if not (0 <= cls <= 2 and 0 <= lvl <= 3):
        raise LocalProtocolError(f"no rank for class {cls}, level {lvl}")
    return cls * 4 + lvl


@dataclass(frozen=True, slots=True)
class Started:
    """``bid`` becomes current and plays from its start (it never played before)."""

    bid: int


@dataclass(frozen=True, slots=True)
class Preempted:
    """``bid`` stops playing because ``by`` outranks it (it then waits, or a :class:`Dropped` follows)."""

    bid: int
    by: int


@dataclass(frozen=True, slots=True)
class Resumed:
    """``bid``, preempted earlier, becomes current again (live: at the live position; stored: where it was)."""

    bid: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """``bid`` arrived outranked (or equal) and waits for the current broadcast to end."""

    bid: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """``bid`` is forgotten without playing further: ``reason`` is ``"preempted"`` or ``"outranked"``."""

    bid: int
    reason: str


@dataclass(frozen=True, slots=True)
class Ended:
    """``bid`` ended (current or waiting) and is forgotten."""

    bid: int


Event = Started | Preempted | Resumed | Waiting | Dropped | Ended


class Relation(enum.Enum):
    NO_CURRENT = "no current"
    HIGHER = "higher"
    EQUAL = "equal"
    LOWER = "lower"


class Outcome(enum.Enum):
    START = "start"
    PREEMPT = "preempt"
    DEFER = "defer"


class Fate(enum.Enum):
    WAIT = "wait"
    DROP = "drop"


ARRIVAL: dict[Relation, Outcome] = {
    Relation.NO_CURRENT: Outcome.START,
    Relation.HIGHER: Outcome.PREEMPT,
    Relation.EQUAL: Outcome.DEFER,
    Relation.LOWER: Outcome.DEFER,
}

FATE: dict[Policy, Fate] = {Policy.RESUME: Fate.WAIT, Policy.DROP: Fate.DROP}

FINISHED_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class _Entry:
    bid: int
    rank: int
    policy: Policy
    arrival: int
    played: bool


class Arbiter:
    """The current broadcast and the waiting list of one device (spec section 6.2).

    Every method returns the events it caused, in order. Arriving again with a ``bid`` that is current,
    waiting, or among the last ``FINISHED_MEMORY`` ended or dropped ones has no effect (commands are
    idempotent); ending a ``bid`` it does not hold has no effect either.
    """

    def __init__(self) -> None:
        self._current: _Entry | None = None
        self._waiting: list[_Entry] = []
        self._arrivals = 0
        self._finished: OrderedDict[int, None] = OrderedDict()

    @property
    def current(self) -> int | None:
        return self._current.bid if self._current is not None else None

    @property
    def waiting(self) -> tuple[int, ...]:
        """Waiting broadcasts, in the order they would resume (rank descending, then arrival)."""
        return tuple(e.bid for e in self._waiting)

    def rank_of(self, bid: int) -> int | None:
        for entry in self._entries():
            if entry.bid == bid:
                return entry.rank
        return None

    def _entries(self) -> list[_Entry]:
        return ([self._current] if self._current is not None else []) + self._waiting

    def arrive(self, bid: int, cls: int, lvl: int, policy: Policy | str) -> list[Event]:
        """A broadcast arrives (``play`` whose time came, ``join``, accepted alert).

        Raises :class:`LocalProtocolError` for a class, level or policy outside the spec's values.
        """
        entry_rank = rank(cls, lvl)
        try:
            entry_policy = Policy(policy)
        except ValueError:
            raise LocalProtocolError(f"policy {policy!r} is neither resume nor drop") from None
        if bid in self._finished or any(e.bid == bid for e in self._entries()):
            return []
        self._arrivals += 1
        entry = _Entry(bid, entry_rank, entry_policy, self._arrivals, played=False)
        current = self._current
        if current is None:
            relation = Relation.NO_CURRENT
        elif entry.rank > current.rank:
            relation = Relation.HIGHER
        else:
            relation = Relation.EQUAL if entry.rank == current.rank else Relation.LOWER
        outcome = ARRIVAL[relation]
        if outcome is Outcome.DEFER:
            return self._set_aside(entry, Waiting(bid), "outranked")
        events: list[Event] = []
        if current is not None:
            events.append(Preempted(current.bid, bid))
            events += self._set_aside(current, None, "preempted")
        self._current = _Entry(bid, entry_rank, entry_policy, entry.arrival, played=True)
        events.append(Started(bid))
        return events

    def _set_aside(self, entry: _Entry, waiting_event: Event | None, reason: str) -> list[Event]:
        if FATE[entry.policy] is Fate.DROP:
            self._finish(entry.bid)
            return [Dropped(entry.bid, reason)]
        self._waiting.append(entry)
        self._waiting.sort(key=lambda e: (-e.rank, e.arrival))
        return [waiting_event] if waiting_event is not None else []

    def end(self, bid: int) -> list[Event]:
        """A broadcast ends (``leave``, end of content, alert expiry or cancel), current or waiting."""
        if self._current is not None and self._current.bid == bid:
            self._current = None
            self._finish(bid)
            events: list[Event] = [Ended(bid)]
            if self._waiting:
                nxt = self._waiting.pop(0)
                self._current = _Entry(nxt.bid, nxt.rank, nxt.policy, nxt.arrival, played=True)
                events.append(Resumed(nxt.bid) if nxt.played else Started(nxt.bid))
            return events
        for i, entry in enumerate(self._waiting):
            if entry.bid == bid:
                del self._waiting[i]
                self._finish(bid)
                return [Ended(bid)]
        return []

    def _finish(self, bid: int) -> None:
        self._finished[bid] = None
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
