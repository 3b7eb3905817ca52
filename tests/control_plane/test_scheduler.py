"""The scheduler under a virtual clock: prefetch ahead, start on time, blocked/missed/failed slots, playlists, and
exactly-once firing across simulated crashes and restarts, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import pytest
from sqlalchemy import select

from loa.control_plane import audit, library, recurrence, schedule
from loa.control_plane.auth import Actor
from loa.control_plane.content import ContentStore
from loa.control_plane.db.schema import schedule_firings
from loa.control_plane.scheduler import Scheduler, SchedulerConfig, slot_key
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import FakeBroadcaster, Seed, fast_settings, library_item
from loa.protocol import Class, Level, Policy

VN = ZoneInfo("Asia/Ho_Chi_Minh")
T0 = datetime(2025, 6, 1, 5, 0, tzinfo=VN)
HAMLET = "20194-01"


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        assert when >= self.now, "the virtual clock never goes back"
        self.now = when


class Crash(BaseException):
    """The process is killed here (nothing catches it)."""


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def plane(db_url: str, tmp_path: Path, clock: Clock) -> Iterator[ControlPlane]:
    cp = ControlPlane(fast_settings(tmp_path, db_url, clock=clock))
    Seed(cp).province()
    yield cp
    cp.close()


def _store(cp: ControlPlane) -> ContentStore:
    return ContentStore(cp.settings.data_dir / "content")


def _entry(cp: ControlPlane, item: int, *, start: datetime, rrule: str | None = "FREQ=DAILY",
           targets: tuple[str, ...] = (HAMLET,), duration_ms: int | None = None, **options: object) -> int:
    timing = recurrence.make(start.replace(tzinfo=None), tz="Asia/Ho_Chi_Minh", rrule_text=rrule)
    spec = schedule.EntrySpec(title=f"lịch {item}", item_id=item, targets=targets, timing=timing,
                              duration_ms=duration_ms, **options)  # type: ignore[arg-type]
    with cp.db.write() as tx:
        entry, _ = schedule.create(tx, Actor("seed-scheduler"), spec, force=True)
    return entry.id


def _firings(cp: ControlPlane) -> list[tuple[int, datetime, str, list[int] | None, str | None]]:
    with cp.db.read() as conn:
        rows = conn.execute(select(schedule_firings).order_by(schedule_firings.c.occurrence_at,
                                                              schedule_firings.c.entry_id)).all()
    return [(r.entry_id, r.occurrence_at, r.status, r.broadcast_ids, r.detail) for r in rows]


def _local(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2025, 6, day, hour, minute, tzinfo=VN).astimezone(UTC)


def test_prefetches_ahead_and_starts_on_time(plane: ControlPlane, clock: Clock) -> None:
    item = library_item(plane, zone="20194", kind="audio", duration_s=1.0, cls=1, lvl=0)
    entry = _entry(plane, item, start=datetime(2025, 6, 1, 6, 0), policy="drop")
    fake = FakeBroadcaster()
    scheduler = Scheduler(plane.db, _store(plane), fake, clock=clock)
    config = scheduler.config
    report = scheduler.tick()
    assert not fake.prefetches
    assert not fake.plays
    assert report.next_at == _local(6) - config.prefetch_lead

    clock.set(report.next_at)
    report = scheduler.tick()
    assert report.prefetched == [slot_key(entry, _local(6))]
    [(path, zones, at)] = fake.prefetches
    assert path.suffix == ".opus"
    assert path.is_file()
    assert (zones, at) == ((HAMLET,), _local(6))
    assert report.next_at == _local(6) - config.start_lead
    assert scheduler.tick().prefetched == []  # once per slot

    clock.set(report.next_at)
    report = scheduler.tick()
    assert report.started == [slot_key(entry, _local(6))]
    [play] = fake.plays
    assert (play["zones"], play["at"], play["cls"], play["lvl"], play["policy"]) == (
        (HAMLET,), _local(6), Class.PRIORITY, Level.COMMUNE, Policy.DROP)
    assert play["key"] == slot_key(entry, _local(6), 0)
    assert play["duration"] == timedelta(seconds=1)
    assert report.next_at == _local(6, day=2) - config.prefetch_lead
    [(entry_id, at, status, bids, _)] = _firings(plane)
    assert (entry_id, at, status, bids) == (entry, _local(6), "started", [1])
    with plane.db.read() as conn:
        [started] = audit.entries(conn, action="schedule.start")
    assert started.actor == "scheduler"
    assert started.details["broadcasts"] == [1]
    assert started.details["occurrence"] == "2025-05-31T23:00:00.000000Z"

    clock.set(_local(7))  # nothing more today; a second scheduler finds the slot done
    assert Scheduler(plane.db, _store(plane), fake, clock=clock).tick().started == []
    assert len(fake.plays) == 1


def test_an_item_edited_after_scheduling_is_blocked_until_approved_again(plane: ControlPlane, clock: Clock) -> None:
    item = library_item(plane, zone="20194")
    entry = _entry(plane, item, start=datetime(2025, 6, 1, 6, 0), duration_ms=30_000)
    with plane.db.write() as tx:
        library.edit(tx, Actor("seed-editor"), item, title="Thông báo (sửa)")
    fake = FakeBroadcaster()
    scheduler = Scheduler(plane.db, _store(plane), fake, clock=clock)
    clock.set(_local(6))
    report = scheduler.tick()
    assert report.blocked == [slot_key(entry, _local(6))]
    assert not fake.plays
    assert not fake.prefetches
    [(_, _, status, _, detail)] = _firings(plane)
    assert status == "blocked"
    assert detail is not None
    assert "draft" in detail


def test_late_slots_play_within_grace_and_are_missed_after(plane: ControlPlane, clock: Clock) -> None:
    item = library_item(plane, zone="20194")
    first = _entry(plane, item, start=datetime(2025, 6, 1, 6, 0), duration_ms=10_000)
    second = _entry(plane, item, start=datetime(2025, 6, 1, 6, 10), duration_ms=10_000)
    fake = FakeBroadcaster()
    clock.set(_local(6, 11))  # the server was down: 6:10 is 1 minute late, 6:00 is 11 minutes late
    report = Scheduler(plane.db, _store(plane), fake, clock=clock).tick()
    assert report.missed == [slot_key(first, _local(6))]
    assert report.started == [slot_key(second, _local(6, 10))]
    assert [p["key"] for p in fake.plays] == [slot_key(second, _local(6, 10), 0)]
    statuses = {(e, s) for e, _, s, _, _ in _firings(plane)}
    assert statuses == {(first, "missed"), (second, "started")}


def test_playlists_play_their_members_back_to_back(plane: ControlPlane, clock: Clock) -> None:
    one = library_item(plane, zone="20194", kind="audio", duration_s=1.0)
    two = library_item(plane, zone="20194", kind="audio", duration_s=2.0)
    with plane.db.write() as tx:
        playlist = library.create(tx, Actor("seed-editor"), kind="playlist", title="Chương trình sáng", cls=0,
                                  lvl=0, zone="20194", members=[one, two, one])
    from loa.control_plane import approval

    with plane.db.write() as tx:
        approval.transition(tx, Actor("seed-editor"), playlist.id, "submit")
    with plane.db.write() as tx:
        approval.transition(tx, Actor("seed-approver"), playlist.id, "approve")
    entry = _entry(plane, playlist.id, start=datetime(2025, 6, 1, 6, 0), rrule=None)
    fake = FakeBroadcaster()
    clock.set(_local(6))
    Scheduler(plane.db, _store(plane), fake, clock=clock).tick()
    assert [(p["at"] - _local(6)).total_seconds() for p in fake.plays] == [0, 1, 3]
    assert [p["key"] for p in fake.plays] == [slot_key(entry, _local(6), i) for i in range(3)]
    [(_, _, status, bids, _)] = _firings(plane)
    assert (status, bids) == ("started", [1, 2, 3])


def test_board_items_and_failures(plane: ControlPlane, clock: Clock) -> None:
    item = library_item(plane, zone="20194")
    entry = _entry(plane, item, start=datetime(2025, 6, 1, 6, 0), duration_ms=45_000)
    fake = FakeBroadcaster()
    fake.fail = RuntimeError("streamer refused")
    scheduler = Scheduler(plane.db, _store(plane), fake, clock=clock)
    clock.set(_local(6))
    assert scheduler.tick().failed == [slot_key(entry, _local(6))]
    clock.set(_local(6, day=2))
    assert scheduler.tick().started == [slot_key(entry, _local(6, day=2))]
    path = fake.plays[-1]["path"]
    assert path.suffix == ".txt"
    assert "lịch họp" in path.read_text(encoding="utf-8")
    assert fake.plays[-1]["duration"] == timedelta(seconds=45)
    [(_, _, failed, _, detail), (_, _, started, _, _)] = _firings(plane)
    assert (failed, started) == ("failed", "started")
    assert detail == "RuntimeError: streamer refused"


def test_the_loop_sleeps_until_the_next_slot(plane: ControlPlane, clock: Clock) -> None:
    item = library_item(plane, zone="20194")
    entry = _entry(plane, item, start=datetime(2025, 6, 1, 5, 0, 30), rrule=None, duration_ms=1000)
    fake = FakeBroadcaster()
    scheduler = Scheduler(plane.db, _store(plane), fake, clock=clock,
                          config=SchedulerConfig(tick=timedelta(seconds=5)))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.set(clock.now + timedelta(seconds=seconds))
        if len(slept) == 12:
            raise anyio.get_cancelled_exc_class()()

    async def main() -> None:
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await scheduler.run(sleep=sleep)

    anyio.run(main)
    assert max(slept) <= 5
    assert [p["key"] for p in fake.plays] == [slot_key(entry, _local(5, 0) + timedelta(seconds=30), 0)]
    assert fake.plays[0]["at"] - timedelta(seconds=2) <= clock.now


# -- exactly once across crashes ---------------------------------------------------------------------------------

POINTS = ("claiming", "claimed", "played", "recording")


@pytest.mark.parametrize("seed", [20250601, 7])
def test_every_slot_fires_exactly_once_across_crashes_and_restarts(plane: ControlPlane, clock: Clock,
                                                                   seed: int) -> None:
    rng = random.Random(seed)
    audio = library_item(plane, zone="20194", kind="audio", duration_s=1.0)
    text = library_item(plane, zone="20194", title="Bảng tin")
    hourly = _entry(plane, audio, start=datetime(2025, 6, 1, 5, 0), rrule="FREQ=HOURLY")
    board = _entry(plane, text, start=datetime(2025, 6, 1, 5, 20), rrule="FREQ=HOURLY;BYMINUTE=20,40",
                   duration_ms=60_000, targets=("20194",))
    daily = _entry(plane, audio, start=datetime(2025, 6, 1, 6, 30), targets=("20194-02",))
    end = clock.now + timedelta(hours=36)
    config = SchedulerConfig()
    fake = FakeBroadcaster()
    crash_at: dict[str, str] = {}  # slot key -> where the process died while handling it
    downtimes: list[tuple[datetime, datetime]] = []

    def fault(point: str) -> None:
        if rng.random() < 0.06:
            crash_at[current[0]] = point
            raise Crash(point)

    current = [""]

    def new_scheduler() -> Scheduler:
        scheduler = Scheduler(plane.db, _store(plane), fake, clock=clock, config=config, fault=fault)
        original = scheduler._fire

        def traced(entry: schedule.EntryRecord, occurrence: datetime, now: datetime, report: object) -> None:
            current[0] = slot_key(entry.id, occurrence)
            original(entry, occurrence, now, report)  # type: ignore[arg-type]

        scheduler._fire = traced  # type: ignore[method-assign]
        return scheduler

    scheduler, crashes, ticks = new_scheduler(), 0, 0
    while clock.now < end:
        try:
            report = scheduler.tick()
        except Crash:
            crashes += 1
            down = clock.now
            # the restart comes at once, within the grace period, or well after it
            clock.set(clock.now + rng.choice([timedelta(0), timedelta(seconds=40), timedelta(seconds=100),
                                              timedelta(minutes=7), timedelta(hours=2)]))
            downtimes.append((down, clock.now))
            scheduler = new_scheduler()
            continue
        ticks += 1
        step = report.next_at - clock.now
        if rng.random() < 0.3:  # sometimes wake early or late (a busy machine)
            step = step * rng.random() + timedelta(seconds=rng.choice([0, 0, 1, 30]))
        clock.set(min(end, clock.now + max(step, timedelta(milliseconds=1))))
    scheduler = new_scheduler()
    scheduler._fault = lambda _point: None
    scheduler.tick()  # the last restart finishes what the last crash left

    expected = {(e, t) for e, rule, start, zone in (
        (hourly, "FREQ=HOURLY", datetime(2025, 6, 1, 5, 0), HAMLET),
        (board, "FREQ=HOURLY;BYMINUTE=20,40", datetime(2025, 6, 1, 5, 20), "20194"),
        (daily, "FREQ=DAILY", datetime(2025, 6, 1, 6, 30), "20194-02"))
        for t in recurrence.make(start, rrule_text=rule).between(T0, end + config.start_lead + timedelta(seconds=1))}
    rows = _firings(plane)
    assert len(rows) == len({(e, t) for e, t, *_ in rows}), "a slot was recorded twice"
    assert {(e, t) for e, t, *_ in rows} == expected, "a slot was never recorded"
    statuses = Counter(status for _, _, status, _, _ in rows)
    assert set(statuses) <= {"started", "missed"}, statuses
    raw = Counter(p["key"] for p in fake.plays)
    for entry_id, at, status, bids, detail in rows:
        key = slot_key(entry_id, at)
        if status == "started":
            assert bids == [fake.by_key[slot_key(entry_id, at, 0)]]
            # played again only when the crash came after the first play and before its record committed
            assert raw[slot_key(entry_id, at, 0)] == 1 or crash_at.get(key) in {"played", "recording"}
        else:  # missed: the scheduler was down from before the slot's grace ran out to after it
            assert any(down <= at + config.grace and up - at > config.grace for down, up in downtimes), key
            assert slot_key(entry_id, at, 0) not in fake.by_key or "interrupted" in (detail or "")
    played_slots = {k.rpartition("#")[0] for k in fake.by_key}
    started = {slot_key(e, t) for e, t, s, _, _ in rows if s == "started"}
    interrupted = {slot_key(e, t) for e, t, s, _, d in rows if s == "missed" and "interrupted" in (d or "")}
    assert played_slots <= started | interrupted
    assert crashes >= 10, crashes
    assert statuses["started"] > statuses["missed"] > 0
    print(f"\n{plane.db.dialect}: {len(expected)} slots over 36 h, {ticks} ticks, {crashes} crashes "
          f"({Counter(crash_at.values())}), {dict(statuses)}, {sum(raw.values()) - len(raw)} repeated plays "
          "answered from the broadcaster's key")
