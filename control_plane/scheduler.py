"""The scheduler: fires schedule entries on time, prefetches ahead, and after a restart neither misses nor
double-fires a slot.

Each slot (entry, occurrence time) goes through, at most once:

1. **prefetch**, ``prefetch_lead`` before the slot (10 min by default): :meth:`Broadcaster.prefetch` of every
   file, so devices hold the content before it plays. Best effort, not recorded: repeated after a restart.
2. **claim**, ``start_lead`` before the slot: in one transaction the item is checked (approved, files present)
   and a ``schedule_firings`` row is inserted with status ``claimed``; the unique index on (entry, occurrence)
   makes this the slot's only claim, whoever else tries. A slot that cannot play is recorded ``blocked`` instead.
3. **start**: :meth:`Broadcaster.play` for each file (a playlist plays its members back to back), with a key
   naming the slot and file.
4. **record**: the row becomes ``started`` with the broadcast ids (or ``failed`` with the error), audited.

A slot first looked at more than ``grace`` after its time (the server was down) is recorded ``missed``, never
played late. After a crash, a slot left ``claimed`` (claimed, but its start not recorded) is started again at the
next start if still within ``grace`` of its time, with the same keys, else recorded ``missed``: the crash took the
in-process streamer, and the broadcast with it, down too. A broadcaster that outlives the scheduler must treat a
repeated key as the broadcast it already has (return its id) -- the test's fake does, and so it sees each slot
played exactly once across any number of crashes. Slots older than ``max_catchup`` are not looked for after a
long downtime. One scheduler runs per database.

Time comes from an injectable clock; :meth:`Scheduler.tick` does all the work due at the clock's ``now`` and says
when it next needs to run, so tests drive it through simulated days in milliseconds. :meth:`Scheduler.run` is
the loop (anyio; database work and callbacks run in a worker thread).

Failure semantics: a callback that raises makes that slot ``failed`` (play) or is logged and skipped
(prefetch); the loop goes on. A database error ends the tick (nothing half-written: each step is one
transaction); the loop logs it and tries again at the next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import anyio
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from loa.control_plane import audit
from loa.control_plane.approval import NotApprovedError, Part, broadcast_parts
from loa.control_plane.content import ContentStore
from loa.control_plane.db import Database, Tx
from loa.control_plane.db.schema import schedule_firings
from loa.control_plane.errors import NotFoundError
from loa.control_plane.events import Event
from loa.control_plane.schedule import DEFAULT_BOARD_MS, EntryRecord, _common_path, enabled_entries
from loa.protocol import Class, Level, Policy

__all__ = ["Broadcaster", "Scheduler", "SchedulerConfig", "TickReport", "slot_key"]

log = logging.getLogger("loa.control_plane.scheduler")
ACTOR = "scheduler"
IDLE = timedelta(hours=1)  # the next_at of a tick with nothing coming (the loop still wakes every `tick`)


class Broadcaster(Protocol):
    """What the scheduler drives (the streamer, in ``loa serve``). Called from a worker thread.

    ``content_path`` is a file of the content store: ``.opus`` audio for speakers; ``.txt`` (UTF-8) or ``.png`` /
    ``.jpg`` for boards. ``at`` is the aware time the content starts; ``duration`` how long it plays (a board
    item: how long it shows). ``key`` names the slot and file (:func:`slot_key`); a repeated key means the same
    broadcast (see the module docstring).
    """

    def prefetch(self, content_path: Path, zones: Sequence[str], at: datetime) -> None: ...

    def play(self, content_path: Path, zones: Sequence[str], at: datetime, cls: Class, lvl: Level,  # noqa: PLR0917
             policy: Policy, *, key: str, duration: timedelta) -> int: ...


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    prefetch_lead: timedelta = timedelta(minutes=10)
    start_lead: timedelta = timedelta(seconds=2)     # play is called this long before the slot
    grace: timedelta = timedelta(minutes=2)          # a slot this late still plays; later it is missed
    max_catchup: timedelta = timedelta(days=7)       # how far back a (re)started scheduler looks
    tick: timedelta = timedelta(seconds=1)           # the longest the loop sleeps


@dataclass(slots=True)
class TickReport:
    """What one tick did (slot keys), and when the next slot needs work (the loop wakes at least every ``tick``
    anyway, to see new and changed entries)."""

    next_at: datetime
    prefetched: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


def slot_key(entry_id: int, occurrence: datetime, part: int | None = None) -> str:
    """``schedule:ENTRY@OCCURRENCE[#PART]``, the occurrence as UTC ISO 8601."""
    base = f"schedule:{entry_id}@{audit.format_time(occurrence)}"
    return base if part is None else f"{base}#{part}"


@dataclass(slots=True)
class _Cursor:
    """Where the scheduler is in one entry's occurrences: the next unhandled one and the rest to come."""

    entry: EntryRecord
    upcoming: Iterator[datetime]
    next: datetime | None


class Scheduler:
    """Fires the schedule of ``db`` through ``broadcaster``; see the module docstring.

    ``fault(point)`` is called at ``claiming`` (inside the claim transaction), ``claimed`` (after it commits),
    ``played`` (after the callbacks) and ``recording`` (inside the last transaction): tests raise there to
    simulate a crash.
    """

    def __init__(self, db: Database, content: ContentStore, broadcaster: Broadcaster, *,
                 config: SchedulerConfig | None = None, clock: Callable[[], datetime] | None = None,
                 fault: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.content = content
        self.broadcaster = broadcaster
        self.config = config or SchedulerConfig()
        self.clock = clock or db.clock
        self._fault = fault or (lambda _point: None)
        self._cursors: dict[int, _Cursor] = {}
        self._prefetched: set[tuple[int, datetime]] = set()
        self._recovered = False
        self._floor: datetime | None = None

    # -- the loop ----------------------------------------------------------------------------------------------

    async def run(self, *, sleep: Callable[[float], Awaitable[Any]] = anyio.sleep) -> None:
        """Tick until cancelled. A failing tick is logged and retried after ``tick``."""
        while True:
            try:
                report = await anyio.to_thread.run_sync(self.tick)
                wait = (report.next_at - self.clock()).total_seconds()
            except Exception:
                log.exception("scheduler tick failed; retrying")
                wait = self.config.tick.total_seconds()
            await sleep(min(max(wait, 0.0), self.config.tick.total_seconds()))

    def tick(self) -> TickReport:
        """Do everything due now: recover claims left by a crash (first tick), record missed slots, prefetch,
        claim and start due slots. Returns what it did and when it next needs to run."""
        now = self.clock()
        report = TickReport(next_at=now + IDLE)
        if self._floor is None:
            self._floor = now - self.config.max_catchup
        if not self._recovered:
            self._recover(now, report)
            self._recovered = True
        self._sync_cursors(now)
        for cursor in list(self._cursors.values()):
            self._advance(cursor, now, report)
        upcoming = [self._wake_time(c) for c in self._cursors.values() if c.next is not None]
        if upcoming:
            report.next_at = min(upcoming)
        return report

    # -- cursors -----------------------------------------------------------------------------------------------

    def _sync_cursors(self, now: datetime) -> None:
        with self.db.read() as conn:
            entries = {e.id: e for e in enabled_entries(conn)}
        for entry_id in list(self._cursors):
            if entry_id not in entries or entries[entry_id].version != self._cursors[entry_id].entry.version:
                del self._cursors[entry_id]
        self._prefetched = {slot for slot in self._prefetched if slot[0] in entries}
        assert self._floor is not None
        for entry_id, entry in entries.items():
            if entry_id in self._cursors:
                continue
            since = max(entry.active_from, self._floor)
            upcoming = entry.timing.iter_from(since)
            self._cursors[entry_id] = _Cursor(entry, upcoming, next(upcoming, None))

    def _wake_time(self, cursor: _Cursor) -> datetime:
        assert cursor.next is not None
        at = cursor.next - self.config.start_lead
        if (cursor.entry.id, cursor.next) not in self._prefetched:
            at = min(at, cursor.next - self.config.prefetch_lead)
        return at

    def _advance(self, cursor: _Cursor, now: datetime, report: TickReport) -> None:
        handled: dict[datetime, str] | None = None
        while cursor.next is not None:
            occurrence = cursor.next
            if occurrence - self.config.start_lead > now:  # not due yet: maybe prefetch, then wait for it
                if occurrence - self.config.prefetch_lead <= now:
                    self._prefetch(cursor.entry, occurrence, report)
                return
            if handled is None:  # the slots of this entry already recorded (one query per entry and tick)
                handled = self._recorded(cursor.entry.id, occurrence)
            status = handled.get(occurrence)
            if status is None:
                self._fire(cursor.entry, occurrence, now, report)
            elif status == "claimed":  # claimed, outcome never recorded: a crash, or a failed write
                self._resume(cursor.entry, occurrence, now, report)
            self._prefetched.discard((cursor.entry.id, occurrence))
            cursor.next = next(cursor.upcoming, None)

    def _recorded(self, entry_id: int, since: datetime) -> dict[datetime, str]:
        with self.db.read() as conn:
            rows = conn.execute(select(schedule_firings.c.occurrence_at, schedule_firings.c.status).where(
                schedule_firings.c.entry_id == entry_id, schedule_firings.c.occurrence_at >= since))
            return {r.occurrence_at: r.status for r in rows}

    # -- one slot ----------------------------------------------------------------------------------------------

    def _parts(self, entry: EntryRecord, conn: Any) -> tuple[list[Part], str | None]:
        """The files to play, or why the slot cannot play."""
        try:
            _, parts = broadcast_parts(conn, entry.item_id)
        except NotApprovedError as exc:
            return [], exc.detail
        except NotFoundError:
            return [], f"library item {entry.item_id} no longer exists"
        missing = [p.sha256 for p in parts if not self.content.has(p.sha256, p.media_type)]
        if missing:
            return [], f"content {missing[0]} is missing from the content store"
        return parts, None

    @staticmethod
    def _duration(entry: EntryRecord, part: Part) -> timedelta:
        if part.media_type == "audio/ogg":
            return timedelta(milliseconds=part.duration_ms or 0)
        return timedelta(milliseconds=entry.duration_ms or DEFAULT_BOARD_MS)

    def _prefetch(self, entry: EntryRecord, occurrence: datetime, report: TickReport) -> None:
        if (entry.id, occurrence) in self._prefetched:
            return
        self._prefetched.add((entry.id, occurrence))
        with self.db.read() as conn:
            parts, why = self._parts(entry, conn)
        if why is not None:
            return  # the slot will be recorded blocked when it is due
        for part in parts:
            at = occurrence + timedelta(milliseconds=part.offset_ms)
            try:
                self.broadcaster.prefetch(self.content.path(part.sha256, part.media_type), entry.targets, at)
            except Exception:
                log.exception("prefetch of %s failed", slot_key(entry.id, occurrence))
        report.prefetched.append(slot_key(entry.id, occurrence))

    def _terminal(self, tx: Tx, entry: EntryRecord, occurrence: datetime, status: str, detail: str | None,
                  *, existing: bool = False, broadcasts: Sequence[int] = ()) -> None:
        values = {"status": status, "detail": detail[:500] if detail else None, "finished_at": tx.now,
                  "item_id": entry.item_id, "broadcast_ids": list(broadcasts) if broadcasts else None}
        if existing:
            tx.conn.execute(update(schedule_firings).where(
                schedule_firings.c.entry_id == entry.id, schedule_firings.c.occurrence_at == occurrence,
                schedule_firings.c.status == "claimed").values(**values))
        else:
            tx.conn.execute(insert(schedule_firings).values(entry_id=entry.id, occurrence_at=occurrence,
                                                            claimed_at=tx.now, **values))
        details: dict[str, Any] = {"entry": entry.id, "occurrence": audit.format_time(occurrence),
                                   "item": entry.item_id, "targets": list(entry.targets)}
        if broadcasts:
            details["broadcasts"] = list(broadcasts)
        if detail:
            details["detail"] = detail[:500]
        action = {"started": "schedule.start", "missed": "schedule.missed", "blocked": "schedule.blocked",
                  "failed": "schedule.failed"}[status]
        audit.record(tx, actor=ACTOR, action=action, target=f"entry:{entry.id}", details=details)
        tx.emit(Event("schedule.firing", {"entry": entry.id, "title": entry.title, "item": entry.item_id,
                                          "occurrence": audit.format_time(occurrence), "status": status,
                                          "targets": list(entry.targets), "broadcasts": list(broadcasts),
                                          "detail": detail},
                      permission="schedule.read", zones=_common_path(tx.conn, entry.targets)))

    def _fire(self, entry: EntryRecord, occurrence: datetime, now: datetime, report: TickReport) -> None:
        key = slot_key(entry.id, occurrence)
        late = now - occurrence
        try:
            with self.db.write() as tx:
                if self._exists(tx, entry.id, occurrence):
                    return
                if late > self.config.grace:
                    self._terminal(tx, entry, occurrence, "missed",
                                   f"not started: the scheduler reached it {late.total_seconds():.0f} s late")
                    report.missed.append(key)
                    return
                parts, why = self._parts(entry, tx.conn)
                if why is not None:
                    self._terminal(tx, entry, occurrence, "blocked", why)
                    report.blocked.append(key)
                    return
                tx.conn.execute(insert(schedule_firings).values(
                    entry_id=entry.id, occurrence_at=occurrence, status="claimed", item_id=entry.item_id,
                    claimed_at=tx.now))
                self._fault("claiming")
        except IntegrityError:  # another scheduler recorded this slot first
            return
        self._fault("claimed")
        self._start(entry, occurrence, parts, report)

    @staticmethod
    def _exists(tx: Tx, entry_id: int, occurrence: datetime) -> bool:
        return tx.conn.execute(select(schedule_firings.c.id).where(
            schedule_firings.c.entry_id == entry_id, schedule_firings.c.occurrence_at == occurrence)
        ).first() is not None

    def _start(self, entry: EntryRecord, occurrence: datetime, parts: Sequence[Part], report: TickReport) -> None:
        """Play a claimed slot and record the outcome."""
        key = slot_key(entry.id, occurrence)
        broadcasts: list[int] = []
        error = None
        for index, part in enumerate(parts):
            at = occurrence + timedelta(milliseconds=part.offset_ms)
            try:
                broadcasts.append(self.broadcaster.play(
                    self.content.path(part.sha256, part.media_type), entry.targets, at, Class(entry.cls),
                    Level(entry.lvl), Policy(entry.policy), key=slot_key(entry.id, occurrence, index),
                    duration=self._duration(entry, part)))
            except Exception as exc:
                log.exception("starting %s failed", key)
                error = f"{type(exc).__name__}: {exc}"
                break
        self._fault("played")
        with self.db.write() as tx:
            if error is not None:
                self._terminal(tx, entry, occurrence, "failed", error, existing=True, broadcasts=broadcasts)
                report.failed.append(key)
            else:
                self._terminal(tx, entry, occurrence, "started", None, existing=True, broadcasts=broadcasts)
                report.started.append(key)
            self._fault("recording")
        self._prefetched.discard((entry.id, occurrence))

    def _recover(self, now: datetime, report: TickReport) -> None:
        """Finish the slots a stopped scheduler claimed but did not record (also those of entries since changed)."""
        with self.db.read() as conn:
            claimed = conn.execute(select(schedule_firings.c.entry_id, schedule_firings.c.occurrence_at)
                                   .where(schedule_firings.c.status == "claimed")
                                   .order_by(schedule_firings.c.occurrence_at)).all()
            entries = {e.id: e for e in enabled_entries(conn)}
        for row in claimed:
            entry = entries.get(row.entry_id)
            if entry is None:
                self._close_orphan(row.entry_id, row.occurrence_at)
            else:
                self._resume(entry, row.occurrence_at, now, report)

    def _resume(self, entry: EntryRecord, occurrence: datetime, now: datetime, report: TickReport) -> None:
        """A slot left ``claimed``: start it again (same keys) if still within ``grace``, else record it missed."""
        key = slot_key(entry.id, occurrence)
        late = now - occurrence
        if late > self.config.grace:
            with self.db.write() as tx:
                self._terminal(tx, entry, occurrence, "missed",
                               f"interrupted after it was claimed; resumed {late.total_seconds():.0f} s late",
                               existing=True)
            report.missed.append(key)
            return
        with self.db.read() as conn:
            parts, why = self._parts(entry, conn)
        if why is not None:
            with self.db.write() as tx:
                self._terminal(tx, entry, occurrence, "blocked", why, existing=True)
            report.blocked.append(key)
            return
        report.recovered.append(key)
        self._start(entry, occurrence, parts, report)

    def _close_orphan(self, entry_id: int, occurrence: datetime) -> None:
        with self.db.write() as tx:
            tx.conn.execute(update(schedule_firings).where(
                schedule_firings.c.entry_id == entry_id, schedule_firings.c.occurrence_at == occurrence,
                schedule_firings.c.status == "claimed").values(
                status="failed", detail="its entry was deleted or disabled before it started", finished_at=tx.now))
            audit.record(tx, actor=ACTOR, action="schedule.failed", target=f"entry:{entry_id}",
                         details={"entry": entry_id, "occurrence": audit.format_time(occurrence),
                                  "detail": "its entry was deleted or disabled before it started"})

