"""The broadcast schedule: entries that play an approved library item to target zones, once or recurring, and
the conflicts between them.

An entry names an item (audio, a playlist, or a board item), its target zones, its timing
(:mod:`loa.control_plane.recurrence`: local start, time zone, RRULE, validity window), its class and issuing level
(the item's by default; an entry may lower them, never raise them), its preemption policy (``resume`` or ``drop``)
and whether it is enabled. An audio entry lasts as long as its item; a board entry shows for ``duration_ms``
(:data:`DEFAULT_BOARD_MS` unless given). Targets must lie within the item's zone (what a commune issues plays in
that commune) and, for the API, within the caller's scope.

**Conflicts.** Two enabled entries of the same medium (speakers, or boards) conflict when one of their
occurrences overlaps one of the other's in time on overlapping zones (one target equal to, above or below the
other). They are looked for over :data:`HORIZON` (14 days) from the new entry's first occurrence from now on;
each conflict lists the zones and the first colliding occurrences. :func:`create` and :func:`update` refuse to
save a conflicting entry (:class:`ScheduleConflictError`, 409, listing them) unless ``force`` is given;
:func:`conflicts` shows them without saving. An entry whose own occurrences overlap is refused outright.

Failure semantics: every function validates first and raises a :mod:`loa.control_plane.errors` error with
nothing written; every change writes its audit entry and queues a ``schedule.entry`` event in the caller's
transaction. Nothing here fires anything: see :mod:`loa.control_plane.scheduler`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, delete, insert, or_, select, update

from loa.control_plane import audit, library, zones
from loa.control_plane.approval import broadcast_parts
from loa.control_plane.auth import Actor, Principal
from loa.control_plane.db import Tx
from loa.control_plane.db.schema import POLICIES, schedule_entries, schedule_firings, schedule_targets
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from loa.control_plane.events import Event
from loa.control_plane.library import CLASSES, LEVELS, ItemRecord
from loa.control_plane.recurrence import HORIZON, MAX_PER_HORIZON, Recurrence

__all__ = [
    "DEFAULT_BOARD_MS",
    "HORIZON",
    "MAX_OCCURRENCES",
    "MAX_RANGE",
    "MAX_TARGETS",
    "Collision",
    "Conflict",
    "EntryRecord",
    "EntrySpec",
    "FiringRecord",
    "Occurrence",
    "ScheduleConflictError",
    "conflicts",
    "create",
    "delete_entry",
    "get",
    "list_entries",
    "list_firings",
    "occurrences",
    "require_visible",
    "update_entry",
    "visible",
]

DEFAULT_BOARD_MS: Final = 60_000
MAX_BOARD_MS: Final = 24 * 3600 * 1000
MAX_TARGETS: Final = 50
MAX_SHOWN: Final = 5            # colliding occurrences listed per conflict
MAX_RANGE: Final = timedelta(days=31)
MAX_OCCURRENCES: Final = 5000


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """What an entry should be. ``cls``/``lvl`` None: the item's; ``duration_ms``: board items only."""

    title: str
    item_id: int
    targets: tuple[str, ...]
    timing: Recurrence
    duration_ms: int | None = None
    cls: int | None = None
    lvl: int | None = None
    policy: str = "resume"
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class EntryRecord:
    id: int
    title: str
    item_id: int
    targets: tuple[str, ...]
    timing: Recurrence
    duration_ms: int | None
    cls: int
    lvl: int
    policy: str
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    active_from: datetime
    version: int

    def spec(self) -> EntrySpec:
        return EntrySpec(self.title, self.item_id, self.targets, self.timing, self.duration_ms, self.cls, self.lvl,
                         self.policy, self.enabled)


@dataclass(frozen=True, slots=True)
class Collision:
    """One occurrence of the entry being checked (``start``-``end``) against one of the other (``other_*``)."""

    start: datetime
    end: datetime
    other_start: datetime
    other_end: datetime


@dataclass(frozen=True, slots=True)
class Conflict:
    entry_id: int
    title: str
    item_id: int
    cls: int
    lvl: int
    zones: tuple[tuple[str, str], ...]        # (our target, their target) pairs that overlap
    collisions: tuple[Collision, ...]         # the first MAX_SHOWN
    count: int                                # all colliding occurrence pairs within the horizon

    def describe(self, tz: Any) -> str:
        first = self.collisions[0]
        start, end = first.start.astimezone(tz), first.end.astimezone(tz)
        shown = "%H:%M:%S" if start.second or end.second else "%H:%M"
        more = f" and {self.count - 1} more time{'s' if self.count > 2 else ''}" if self.count > 1 else ""
        where = ", ".join(sorted({f"{ours}/{theirs}" if ours != theirs else ours for ours, theirs in self.zones}))
        return (f"entry {self.entry_id} {self.title!r} ({CLASSES[self.cls]}) on {where} at "
                f"{start:%Y-%m-%d} {start.strftime(shown)}-{end.strftime(shown)}{more}")


@dataclass(frozen=True, slots=True)
class Occurrence:
    entry_id: int
    title: str
    item_id: int
    start: datetime
    end: datetime
    targets: tuple[str, ...]
    cls: int
    lvl: int
    policy: str


@dataclass(frozen=True, slots=True)
class FiringRecord:
    id: int
    entry_id: int
    occurrence_at: datetime
    status: str
    item_id: int | None
    broadcast_ids: tuple[int, ...]
    detail: str | None
    claimed_at: datetime
    finished_at: datetime | None


class ScheduleConflictError(ConflictError):
    kind, title = "schedule-conflict", "Schedule conflict"


@dataclass(frozen=True, slots=True)
class _Resolved:
    item: ItemRecord
    duration_ms: int
    cls: int
    lvl: int
    medium: str
    paths: dict[str, frozenset[str]] = field(default_factory=dict)


# -- reading -----------------------------------------------------------------------------------------------------

def _records(conn: Connection, rows: Sequence[Any]) -> list[EntryRecord]:
    ids = [r.id for r in rows]
    targets: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        for t in conn.execute(select(schedule_targets).where(schedule_targets.c.entry_id.in_(ids))
                              .order_by(schedule_targets.c.entry_id, schedule_targets.c.zone)):
            targets[t.entry_id].append(t.zone)
    return [EntryRecord(r.id, r.title, r.item_id, tuple(targets[r.id]),
                        Recurrence(datetime.fromisoformat(r.start_local), r.tz, r.rrule, r.valid_from, r.valid_until),
                        r.duration_ms, r.cls, r.lvl, r.policy, r.enabled, r.created_by, r.created_at, r.updated_at,
                        r.active_from, r.version) for r in rows]


def get(conn: Connection, entry_id: int) -> EntryRecord:
    rows = conn.execute(select(schedule_entries).where(schedule_entries.c.id == entry_id)).all()
    if not rows:
        raise NotFoundError(f"no schedule entry {entry_id}")
    return _records(conn, rows)[0]


def enabled_entries(conn: Connection) -> list[EntryRecord]:
    """Every enabled entry (what the scheduler runs)."""
    rows = conn.execute(select(schedule_entries).where(schedule_entries.c.enabled.is_(True))
                        .order_by(schedule_entries.c.id)).all()
    return _records(conn, rows)


def _affecting(conn: Connection, scope: str) -> Any:
    """A condition on entry ids: entries with a target in ``scope``'s subtree or above it."""
    above = zones.ancestors(conn, scope)
    return select(schedule_targets.c.entry_id).where(or_(
        schedule_targets.c.zone.in_(above), schedule_targets.c.zone.in_(library.subtrees([scope], "visible_down"))))


def visible(conn: Connection, principal: Principal, entry: EntryRecord) -> bool:
    """Entries are visible to users whose zones they play in: a target in the scope's subtree, or above it."""
    if principal.scope is None:
        return True
    above = set(zones.ancestors(conn, principal.scope))
    return any(t in above or principal.scope in zones.ancestors(conn, t) for t in entry.targets)


def require_visible(conn: Connection, principal: Principal, entry: EntryRecord) -> None:
    if not visible(conn, principal, entry):
        raise ForbiddenError(f"schedule entry {entry.id} plays outside your scope ({principal.scope})")


def list_entries(conn: Connection, *, visible_to: str | None = None, zone: str | None = None,
                 item_id: int | None = None, enabled: bool | None = None, after: int | None = None,
                 limit: int = 100) -> list[EntryRecord]:
    """Entries by id; ``visible_to`` keeps those playing in or above that scope, ``zone`` those with a target in
    that zone's subtree; ``after``: only ids above it."""
    query = select(schedule_entries).order_by(schedule_entries.c.id).limit(limit)
    if visible_to is not None:
        query = query.where(schedule_entries.c.id.in_(_affecting(conn, visible_to)))
    if zone is not None:
        query = query.where(schedule_entries.c.id.in_(
            select(schedule_targets.c.entry_id).where(schedule_targets.c.zone.in_(library.subtrees([zone],
                                                                                                  "filter_down")))))
    if item_id is not None:
        query = query.where(schedule_entries.c.item_id == item_id)
    if enabled is not None:
        query = query.where(schedule_entries.c.enabled.is_(enabled))
    if after is not None:
        query = query.where(schedule_entries.c.id > after)
    return _records(conn, conn.execute(query).all())


def list_firings(conn: Connection, entry_id: int, *, before: int | None = None, limit: int = 100
                 ) -> list[FiringRecord]:
    """What the scheduler did with an entry's occurrences, newest first."""
    query = (select(schedule_firings).where(schedule_firings.c.entry_id == entry_id)
             .order_by(schedule_firings.c.id.desc()).limit(limit))
    if before is not None:
        query = query.where(schedule_firings.c.id < before)
    return [FiringRecord(r.id, r.entry_id, r.occurrence_at, r.status, r.item_id, tuple(r.broadcast_ids or ()),
                         r.detail, r.claimed_at, r.finished_at) for r in conn.execute(query)]


# -- checking ----------------------------------------------------------------------------------------------------

def _check_targets(conn: Connection, targets: Iterable[str]) -> tuple[str, ...]:
    unique = tuple(sorted(set(targets)))
    if not 1 <= len(unique) <= MAX_TARGETS:
        raise InvalidError(f"an entry targets 1-{MAX_TARGETS} zones")
    for code in unique:
        zones.get(conn, code)
    return unique


def _resolve(conn: Connection, spec: EntrySpec, *, need_approval: bool) -> _Resolved:
    if need_approval:
        item, _ = broadcast_parts(conn, spec.item_id)
    else:
        item = library.get(conn, spec.item_id)
    paths = {t: frozenset(zones.ancestors(conn, t)) for t in spec.targets}
    if item.zone is not None:
        outside = [t for t, path in paths.items() if item.zone not in path]
        if outside:
            raise InvalidError(f"library item {item.id} belongs to zone {item.zone}: it plays only within it, "
                               f"not in {', '.join(outside)}")
    if spec.policy not in POLICIES:
        raise InvalidError(f"policy must be one of {', '.join(POLICIES)}")
    cls = item.cls if spec.cls is None else spec.cls
    lvl = item.lvl if spec.lvl is None else spec.lvl
    if not (0 <= cls < len(CLASSES) and 0 <= lvl < len(LEVELS)):
        raise InvalidError("class or level out of range")
    if cls > item.cls or lvl > item.lvl:
        raise InvalidError(f"an entry may lower its item's class ({item.class_name}) and level ({item.level_name}), "
                           "never raise them")
    if item.medium == "audio":
        if spec.duration_ms is not None:
            raise InvalidError("audio plays for its own length: duration is for board items")
        duration = item.duration_ms
        if not duration:
            raise InvalidError(f"library item {item.id} has no audio length")
    else:
        duration = spec.duration_ms or DEFAULT_BOARD_MS
        if not 0 < duration <= MAX_BOARD_MS:
            raise InvalidError(f"a board item shows for 1 ms to {MAX_BOARD_MS // 3_600_000} h")
    return _Resolved(item, duration, cls, lvl, item.medium, paths)


def _window(timing: Recurrence, now: datetime) -> tuple[datetime, datetime] | None:
    first = timing.first(now)
    return None if first is None else (first, first + HORIZON)


def _own_overlap(timing: Recurrence, duration: timedelta, starts: Sequence[datetime]) -> None:
    if len(starts) > MAX_PER_HORIZON:
        raise InvalidError(f"the entry occurs more than {MAX_PER_HORIZON} times in {HORIZON.days} days")
    for a, b in itertools.pairwise(starts):
        if b < a + duration:
            tz = timing.zone
            raise InvalidError(f"the entry's own occurrences overlap: it lasts {duration.total_seconds():g} s but "
                               f"{a.astimezone(tz):%Y-%m-%d %H:%M} and {b.astimezone(tz):%H:%M} are closer")


def _collide(ours: Sequence[datetime], our_len: timedelta, theirs: Sequence[datetime],
             their_len: timedelta) -> tuple[list[Collision], int]:
    shown: list[Collision] = []
    total, j = 0, 0
    for start in ours:
        end = start + our_len
        while j < len(theirs) and theirs[j] + their_len <= start:
            j += 1
        k = j
        while k < len(theirs) and theirs[k] < end:
            total += 1
            if len(shown) < MAX_SHOWN:
                shown.append(Collision(start, end, theirs[k], theirs[k] + their_len))
            k += 1
    return shown, total


def _conflicts(conn: Connection, spec: EntrySpec, resolved: _Resolved, *, now: datetime,
               exclude: int | None) -> list[Conflict]:
    window = _window(spec.timing, now)
    if window is None:
        return []
    w0, w1 = window
    our_len = timedelta(milliseconds=resolved.duration_ms)
    ours = spec.timing.between(w0, w1)
    _own_overlap(spec.timing, our_len, ours)
    if not spec.enabled or not ours:
        return []
    near: set[str] = set()
    for path in resolved.paths.values():
        near |= path
    overlapping = select(schedule_targets.c.entry_id).where(or_(
        schedule_targets.c.zone.in_(sorted(near)),
        schedule_targets.c.zone.in_(library.subtrees(spec.targets, "targets_down"))))
    query = select(schedule_entries).where(schedule_entries.c.id.in_(overlapping),
                                           schedule_entries.c.enabled.is_(True)).order_by(schedule_entries.c.id)
    if exclude is not None:
        query = query.where(schedule_entries.c.id != exclude)
    others = _records(conn, conn.execute(query).all())
    items = library.get_many(conn, [o.item_id for o in others])
    paths: dict[str, frozenset[str]] = dict(resolved.paths)
    found = []
    for other in others:
        item = items[other.item_id]
        if item.medium != resolved.medium:
            continue
        their_len = timedelta(milliseconds=(other.duration_ms or DEFAULT_BOARD_MS) if item.medium == "board"
                              else (item.duration_ms or 0))
        if their_len <= timedelta(0):
            continue
        for zone in other.targets:
            if zone not in paths:
                paths[zone] = frozenset(zones.ancestors(conn, zone))
        pairs = tuple((ours_t, theirs_t) for ours_t in spec.targets for theirs_t in other.targets
                      if ours_t in paths[theirs_t] or theirs_t in resolved.paths[ours_t])
        if not pairs:
            continue
        theirs = other.timing.between(w0 - their_len, w1)
        shown, total = _collide(ours, our_len, theirs, their_len)
        if total:
            found.append(Conflict(other.id, other.title, other.item_id, other.cls, other.lvl, pairs, tuple(shown),
                                  total))
    return found


def conflicts(conn: Connection, spec: EntrySpec, *, now: datetime, exclude: int | None = None) -> list[Conflict]:
    """Check ``spec`` as :func:`create` would (approved item, targets, timing) and return its conflicts with the
    saved entries (``exclude``: the entry being edited), without saving anything."""
    spec = replace(spec, targets=_check_targets(conn, spec.targets))
    return _conflicts(conn, spec, _resolve(conn, spec, need_approval=True), now=now, exclude=exclude)


def _refuse(spec: EntrySpec, found: Sequence[Conflict]) -> ScheduleConflictError:
    listed = "; ".join(c.describe(spec.timing.zone) for c in found[:5])
    more = f"; and {len(found) - 5} more entries" if len(found) > 5 else ""
    return ScheduleConflictError(
        f"conflicts with {len(found)} entr{'y' if len(found) == 1 else 'ies'}: {listed}{more} "
        f"({spec.timing.tz}). Change the time or zones, or save with force to keep both",
        extra={"conflicts": [conflict_dict(c) for c in found]})


def conflict_dict(conflict: Conflict) -> dict[str, Any]:
    return {"entry": conflict.entry_id, "title": conflict.title, "item": conflict.item_id,
            "class": CLASSES[conflict.cls], "level": LEVELS[conflict.lvl],
            "zones": [list(pair) for pair in conflict.zones], "count": conflict.count,
            "occurrences": [{"start": _iso(c.start), "end": _iso(c.end), "other_start": _iso(c.other_start),
                             "other_end": _iso(c.other_end)} for c in conflict.collisions]}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- changing ----------------------------------------------------------------------------------------------------

def _common_path(conn: Connection, targets: Sequence[str]) -> tuple[str, ...]:
    paths = [zones.ancestors(conn, t) for t in targets]
    common: list[str] = []
    for level in zip(*paths, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return tuple(common)


def _emit(tx: Tx, entry: EntryRecord, change: str, by: str) -> None:
    tx.emit(Event("schedule.entry", {"entry": entry.id, "title": entry.title, "item": entry.item_id,
                                     "targets": list(entry.targets), "enabled": entry.enabled,
                                     "version": entry.version, "change": change, "by": by},
                  permission="schedule.read", zones=_common_path(tx.conn, entry.targets)))


def _values(spec: EntrySpec, resolved: _Resolved) -> dict[str, Any]:
    t = spec.timing
    return {"title": library.check_title(spec.title), "item_id": spec.item_id,
            "start_local": t.start_local.isoformat(timespec="seconds"), "tz": t.tz, "rrule": t.rrule,
            "valid_from": t.valid_from, "valid_until": t.valid_until,
            "duration_ms": spec.duration_ms if resolved.medium == "board" else None, "cls": resolved.cls,
            "lvl": resolved.lvl, "policy": spec.policy, "enabled": spec.enabled}


def _audit_details(entry: EntryRecord, found: Sequence[Conflict]) -> dict[str, Any]:
    t = entry.timing
    details: dict[str, Any] = {
        "title": entry.title, "item": entry.item_id, "targets": list(entry.targets),
        "start": t.start_local.isoformat(timespec="seconds"), "tz": t.tz, "rrule": t.rrule,
        "valid_from": audit.format_time(t.valid_from) if t.valid_from else None,
        "valid_until": audit.format_time(t.valid_until) if t.valid_until else None,
        "duration_ms": entry.duration_ms, "class": CLASSES[entry.cls], "level": LEVELS[entry.lvl],
        "policy": entry.policy, "enabled": entry.enabled, "version": entry.version}
    if found:
        details["forced_over"] = [c.entry_id for c in found[:100]]
    return details


def create(tx: Tx, actor: Actor, spec: EntrySpec, *, force: bool = False) -> tuple[EntryRecord, list[Conflict]]:
    """Save a new entry for an approved item (:class:`NotApprovedError` otherwise); with conflicts, only if
    ``force`` (they are returned and audited), else :class:`ScheduleConflictError` listing them."""
    spec = replace(spec, targets=_check_targets(tx.conn, spec.targets))
    resolved = _resolve(tx.conn, spec, need_approval=True)
    found = _conflicts(tx.conn, spec, resolved, now=tx.now, exclude=None)
    if found and not force:
        raise _refuse(spec, found)
    result = tx.conn.execute(insert(schedule_entries).values(
        **_values(spec, resolved), created_by=actor.name, created_at=tx.now, updated_at=tx.now, active_from=tx.now,
        version=1))
    assert result.inserted_primary_key is not None
    entry_id = int(result.inserted_primary_key[0])
    tx.conn.execute(insert(schedule_targets), [{"entry_id": entry_id, "zone": t} for t in spec.targets])
    entry = get(tx.conn, entry_id)
    audit.record(tx, actor=actor.name, source=actor.source, action="schedule.create", target=f"entry:{entry_id}",
                 details=_audit_details(entry, found))
    _emit(tx, entry, "create", actor.name)
    return entry, found


def update_entry(tx: Tx, actor: Actor, entry_id: int, spec: EntrySpec, *, force: bool = False
                 ) -> tuple[EntryRecord, list[Conflict]]:
    """Replace an entry's definition with ``spec`` (build it from :meth:`EntryRecord.spec`). The item must be
    approved when it changes or the entry is enabled; conflicts as in :func:`create`. A change of timing makes
    occurrences before now count as never scheduled (they are not reported missed)."""
    before = get(tx.conn, entry_id)
    spec = replace(spec, targets=_check_targets(tx.conn, spec.targets))
    need_approval = spec.enabled and (spec.item_id != before.item_id or not before.enabled
                                      or spec.targets != before.targets or spec.timing != before.timing)
    resolved = _resolve(tx.conn, spec, need_approval=need_approval)
    values = _values(spec, resolved)
    old = _values(before.spec(), resolved)
    old.update(cls=before.cls, lvl=before.lvl, duration_ms=before.duration_ms)
    changed = {k for k in values if values[k] != old.get(k)}
    if spec.targets != before.targets:
        changed.add("targets")
    if not changed:
        return before, []
    found = _conflicts(tx.conn, spec, resolved, now=tx.now, exclude=entry_id)
    if found and not force:
        raise _refuse(spec, found)
    timing_changed = bool(changed & {"start_local", "tz", "rrule", "valid_from", "valid_until"})
    values.update(updated_at=tx.now, version=before.version + 1)
    if timing_changed or (spec.enabled and not before.enabled):
        values["active_from"] = tx.now
    tx.conn.execute(update(schedule_entries).where(schedule_entries.c.id == entry_id).values(**values))
    if spec.targets != before.targets:
        tx.conn.execute(delete(schedule_targets).where(schedule_targets.c.entry_id == entry_id))
        tx.conn.execute(insert(schedule_targets), [{"entry_id": entry_id, "zone": t} for t in spec.targets])
    after = get(tx.conn, entry_id)
    old_details, new_details = _audit_details(before, ()), _audit_details(after, found)
    audit.record(tx, actor=actor.name, source=actor.source, action="schedule.update", target=f"entry:{entry_id}",
                 details={"before": {k: v for k, v in old_details.items() if new_details.get(k) != v},
                          "after": {k: v for k, v in new_details.items() if old_details.get(k) != v}})
    _emit(tx, after, "update", actor.name)
    return after, found


def delete_entry(tx: Tx, actor: Actor, entry_id: int) -> None:
    """Delete an entry; its firing records stay (reports use them)."""
    entry = get(tx.conn, entry_id)
    tx.conn.execute(delete(schedule_entries).where(schedule_entries.c.id == entry_id))
    audit.record(tx, actor=actor.name, source=actor.source, action="schedule.delete", target=f"entry:{entry_id}",
                 details=_audit_details(entry, ()))
    _emit(tx, entry, "delete", actor.name)


# -- occurrences -------------------------------------------------------------------------------------------------

def occurrences(conn: Connection, *, since: datetime, until: datetime, visible_to: str | None = None,
                zone: str | None = None, entry_id: int | None = None, limit: int = MAX_OCCURRENCES
                ) -> tuple[list[Occurrence], bool]:
    """Occurrences starting in ``[since, until)`` (at most :data:`MAX_RANGE`) of enabled entries (or of one
    entry), by start time; returns them and whether ``limit`` cut the list short."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        raise InvalidError("until must be after since")
    if until - since > MAX_RANGE:
        raise InvalidError(f"ask for at most {MAX_RANGE.days} days at a time")
    if entry_id is not None:
        entries = [get(conn, entry_id)]
    else:
        entries = list_entries(conn, visible_to=visible_to, zone=zone, enabled=True, limit=10**6)
    items = library.get_many(conn, [e.item_id for e in entries])
    out: list[Occurrence] = []
    for entry in entries:
        item = items[entry.item_id]
        length = timedelta(milliseconds=(entry.duration_ms or DEFAULT_BOARD_MS) if item.medium == "board"
                           else (item.duration_ms or 0))
        for start in entry.timing.between(since, until):
            out.append(Occurrence(entry.id, entry.title, entry.item_id, start, start + length, entry.targets,
                                  entry.cls, entry.lvl, entry.policy))
            if len(out) > limit * 2:
                break
    out.sort(key=lambda o: (o.start, o.entry_id))
    return out[:limit], len(out) > limit
