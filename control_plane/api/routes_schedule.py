"""/api/v1/schedule: entries, their conflicts (checked before saving), occurrences and firing records.

Schedulers (and NOC operators, admins) create, change and delete entries whose target zones all lie in their
scope, for approved items they can see (409 ``not-approved`` otherwise). ``POST /api/v1/schedule/check`` shows
the conflicts an entry would have without saving it; creating or changing a conflicting entry answers 409
``schedule-conflict`` listing them, unless ``force`` is set. Everyone with ``schedule.read`` sees the entries
that play in their zones (a target in their scope, or above it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import Connection

from loa.control_plane import auth, library, recurrence, schedule, zones
from loa.control_plane.api import models as m
from loa.control_plane.api import models_schedule as ms
from loa.control_plane.api.deps import CP, Caller, Source, actor, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.errors import InvalidError

router = APIRouter(prefix="/api/v1/schedule", tags=["schedule"], responses=PROBLEM_RESPONSES)
EntryPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})$"
Time = Annotated[str, Query(pattern=ISO_TIME, description="ISO 8601 time with an offset",
                            examples=["2025-06-02T00:00:00+07:00"])]


def _time(text: str, name: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except (OverflowError, ValueError):
        raise InvalidError(f"{name}: {text!r} is not a valid time") from None
    if when.tzinfo is None:
        raise InvalidError(f"{name}: give a UTC offset")
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidError(f"{name}: {text!r} is out of range") from None


def _spec(conn: Connection, caller: auth.Principal, body: ms.EntryBody) -> schedule.EntrySpec:
    for zone in body.zones:
        zones.get(conn, zone)
        auth.require_zone(conn, caller, zone)
    library.require_visible(conn, caller, library.get(conn, body.item))
    timing = recurrence.make(body.start, tz=body.tz, rrule_text=body.rrule, valid_from=body.valid_from,
                             valid_until=body.valid_until)
    return schedule.EntrySpec(
        title=body.title, item_id=body.item, targets=tuple(body.zones), timing=timing, duration_ms=body.duration_ms,
        cls=library.class_of(body.class_) if body.class_ else None,
        lvl=library.level_of(body.level) if body.level else None, policy=body.policy, enabled=body.enabled)


@router.get("", response_model=ms.EntryPage, **guard("schedule.read"))
def list_entries(*, cp: CP, caller: Caller, zone: Annotated[str | None, Query(pattern=m.CODE_PATTERN)] = None,
                 item: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None, enabled: bool | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> ms.EntryPage:
    """Entries that play in my zones, by id; ``zone`` keeps those with a target in that zone's subtree."""
    with cp.db.read() as conn:
        if zone is not None:
            zones.get(conn, zone)
        found = schedule.list_entries(conn, visible_to=caller.scope, zone=zone, item_id=item, enabled=enabled,
                                      after=decode_cursor(cursor, int), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    now = cp.db.clock()
    return ms.EntryPage(items=[ms.Entry.of(e, now) for e in found],
                        next_cursor=encode_cursor(found[-1].id) if more else None)


@router.post("", status_code=201, response_model=ms.EntrySaved, **guard("schedule.write"))
def create_entry(body: ms.EntryCreate, cp: CP, caller: Caller, source: Source) -> ms.EntrySaved:
    """Schedule an approved item to zones of my scope, once or recurring (RRULE, in the entry's time zone).
    409 ``schedule-conflict`` lists the entries it would collide with, unless ``force``."""
    with cp.db.write() as tx:
        spec = _spec(tx.conn, caller, body)
        entry, found = schedule.create(tx, actor(caller, source), spec, force=body.force)
    return ms.EntrySaved(entry=ms.Entry.of(entry, cp.db.clock()), conflicts=[ms.ConflictOut.of(c) for c in found])


@router.post("/check", response_model=ms.CheckResult, **guard("schedule.write"))
def check_entry(body: ms.EntryCheck, cp: CP, caller: Caller) -> ms.CheckResult:
    """Check an entry as creating it would (scope, approval, timing) and list its conflicts over the next
    14 days from its first occurrence, without saving anything."""
    with cp.db.read() as conn:
        spec = _spec(conn, caller, body)
        if body.replaces is not None:
            schedule.require_visible(conn, caller, schedule.get(conn, body.replaces))
        now = cp.db.clock()
        found = schedule.conflicts(conn, spec, now=now, exclude=body.replaces)
    upcoming = []
    for start in spec.timing.iter_from(now):
        upcoming.append(start)
        if len(upcoming) == 10:
            break
    return ms.CheckResult(ok=not found, conflicts=[ms.ConflictOut.of(c) for c in found],
                          horizon_days=schedule.HORIZON.days, next_occurrences=upcoming)


@router.get("/occurrences", response_model=ms.OccurrenceList, **guard("schedule.read"))
def list_occurrences(*, cp: CP, caller: Caller, since: Time, until: Time,
                     zone: Annotated[str | None, Query(pattern=m.CODE_PATTERN)] = None,
                     entry: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
                     limit: Annotated[int, Query(ge=1, le=schedule.MAX_OCCURRENCES)] = 1000) -> ms.OccurrenceList:
    """Occurrences starting in ``[since, until)`` (at most 31 days) of the enabled entries that play in my
    zones (``zone``: with a target in that subtree; ``entry``: of that one entry), by start time."""
    start, end = _time(since, "since"), _time(until, "until")
    with cp.db.read() as conn:
        if zone is not None:
            zones.get(conn, zone)
        if entry is not None:
            schedule.require_visible(conn, caller, schedule.get(conn, entry))
        found, truncated = schedule.occurrences(conn, since=start, until=end, visible_to=caller.scope, zone=zone,
                                                entry_id=entry, limit=limit)
    return ms.OccurrenceList(items=[ms.OccurrenceOut.of(o) for o in found], truncated=truncated)


@router.get("/{entry_id}", response_model=ms.Entry, **guard("schedule.read"))
def get_entry(entry_id: EntryPath, cp: CP, caller: Caller) -> ms.Entry:
    with cp.db.read() as conn:
        entry = schedule.get(conn, entry_id)
        schedule.require_visible(conn, caller, entry)
    return ms.Entry.of(entry, cp.db.clock())


def _require_targets(conn: Connection, caller: auth.Principal, entry: schedule.EntryRecord) -> None:
    for zone in entry.targets:
        auth.require_zone(conn, caller, zone)


@router.patch("/{entry_id}", response_model=ms.EntrySaved, **guard("schedule.write"))
def patch_entry(entry_id: EntryPath, body: ms.EntryPatch, cp: CP, caller: Caller, source: Source) -> ms.EntrySaved:
    """Change an entry (fields left out stay; ``rrule``, ``valid_from``, ``valid_until`` null: removed).
    Conflicts as when creating; a change of timing does not report earlier occurrences as missed."""
    given = body.model_fields_set
    with cp.db.write() as tx:
        before = schedule.get(tx.conn, entry_id)
        _require_targets(tx.conn, caller, before)
        t = before.timing
        merged = ms.EntryBody.model_validate({
            "title": body.title if body.title is not None else before.title,
            "item": body.item if body.item is not None else before.item_id,
            "zones": body.zones if body.zones is not None else list(before.targets),
            "start": body.start if body.start is not None else t.start_local,
            "tz": body.tz if body.tz is not None else t.tz,
            "rrule": body.rrule if "rrule" in given else t.rrule,
            "duration_ms": body.duration_ms if "duration_ms" in given else before.duration_ms,
            "valid_from": body.valid_from if "valid_from" in given else t.valid_from,
            "valid_until": body.valid_until if "valid_until" in given else t.valid_until,
            "class": body.class_ if body.class_ is not None else library.CLASSES[before.cls],
            "level": body.level if body.level is not None else library.LEVELS[before.lvl],
            "policy": body.policy if body.policy is not None else before.policy,
            "enabled": body.enabled if body.enabled is not None else before.enabled,
        })
        spec = _spec(tx.conn, caller, merged)
        entry, found = schedule.update_entry(tx, actor(caller, source), entry_id, spec, force=body.force)
    return ms.EntrySaved(entry=ms.Entry.of(entry, cp.db.clock()), conflicts=[ms.ConflictOut.of(c) for c in found])


@router.delete("/{entry_id}", status_code=204, response_class=Response, **guard("schedule.write"))
def delete_entry(entry_id: EntryPath, cp: CP, caller: Caller, source: Source) -> Response:
    """Delete an entry (its firing records stay)."""
    with cp.db.write() as tx:
        entry = schedule.get(tx.conn, entry_id)
        _require_targets(tx.conn, caller, entry)
        schedule.delete_entry(tx, actor(caller, source), entry_id)
    return Response(status_code=204)


@router.get("/{entry_id}/firings", response_model=ms.FiringPage, **guard("schedule.read"))
def list_firings(entry_id: EntryPath, cp: CP, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 cursor: str | None = None) -> ms.FiringPage:
    """What the scheduler did with each occurrence (started, missed, blocked, failed), newest first."""
    with cp.db.read() as conn:
        schedule.require_visible(conn, caller, schedule.get(conn, entry_id))
        found = schedule.list_firings(conn, entry_id, before=decode_cursor(cursor, int), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return ms.FiringPage(items=[ms.Firing.of(f) for f in found],
                         next_cursor=encode_cursor(found[-1].id) if more else None)
