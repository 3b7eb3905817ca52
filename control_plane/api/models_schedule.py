"""Request and response bodies of the schedule routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from loa.control_plane import schedule as sch
from loa.control_plane.api.models import Code, Name, Strict
from loa.control_plane.api.models_library import ItemClass, ItemId, ItemLevel
from loa.control_plane.library import CLASSES, LEVELS
from loa.control_plane.recurrence import DEFAULT_TZ, MAX_RULE_LEN

PolicyName = Literal["resume", "drop"]
FiringStatus = Literal["claimed", "started", "failed", "missed", "blocked"]
Targets = Annotated[list[Code], Field(min_length=1, max_length=sch.MAX_TARGETS, examples=[["20194"]])]
TzName = Annotated[str, Field(min_length=1, max_length=64, examples=[DEFAULT_TZ])]
Rule = Annotated[str, Field(min_length=1, max_length=MAX_RULE_LEN, examples=["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"],
                            description="An RFC 5545 RRULE value; UNTIL in UTC (…Z)")]
Duration = Annotated[int, Field(ge=1, le=sch.MAX_BOARD_MS, description="Board items: how long to show (ms)")]
START_DOC = "First occurrence: a local wall-clock time in `tz` (no offset), or any time with an offset"


class EntryBody(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    title: Name
    item: ItemId
    zones: Targets
    start: datetime = Field(description=START_DOC, examples=["2025-06-02T06:00:00"])
    tz: TzName = DEFAULT_TZ
    rrule: Rule | None = None
    duration_ms: Duration | None = None
    valid_from: datetime | None = Field(None, description="No occurrence before this time (with an offset)")
    valid_until: datetime | None = Field(None, description="No occurrence from this time on (with an offset)")
    class_: ItemClass | None = Field(None, alias="class", description="Default: the item's; never above it")
    level: ItemLevel | None = Field(None, description="Default: the item's; never above it")
    policy: PolicyName = "resume"
    enabled: bool = True


class EntryCreate(EntryBody):
    force: bool = Field(False, description="Save even if it conflicts with other entries")


class EntryCheck(EntryBody):
    replaces: ItemId | None = Field(None, description="The entry this would replace (left out of the check)")


class EntryPatch(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    title: Name | None = None
    item: ItemId | None = None
    zones: Targets | None = None
    start: datetime | None = Field(None, description=START_DOC)
    tz: TzName | None = None
    rrule: Rule | None = Field(None, description="null (explicitly): a one-off entry")
    duration_ms: Duration | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    class_: ItemClass | None = Field(None, alias="class")
    level: ItemLevel | None = None
    policy: PolicyName | None = None
    enabled: bool | None = None
    force: bool = False


class Entry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    title: str
    item: int
    zones: list[str]
    start: str = Field(description="Local wall-clock time of the first occurrence, in `tz`")
    tz: str
    rrule: str | None
    duration_ms: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    class_: ItemClass = Field(alias="class")
    level: ItemLevel
    policy: PolicyName
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int
    next_occurrence: datetime | None

    @classmethod
    def of(cls, e: sch.EntryRecord, now: datetime) -> Entry:
        return cls.model_validate({
            "id": e.id, "title": e.title, "item": e.item_id, "zones": list(e.targets),
            "start": e.timing.start_local.isoformat(timespec="seconds"), "tz": e.timing.tz, "rrule": e.timing.rrule,
            "duration_ms": e.duration_ms, "valid_from": e.timing.valid_from, "valid_until": e.timing.valid_until,
            "class": CLASSES[e.cls], "level": LEVELS[e.lvl], "policy": e.policy, "enabled": e.enabled,
            "created_by": e.created_by, "created_at": e.created_at, "updated_at": e.updated_at,
            "version": e.version, "next_occurrence": e.timing.first(now) if e.enabled else None})


class EntryPage(BaseModel):
    items: list[Entry]
    next_cursor: str | None


class Collision(BaseModel):
    start: datetime
    end: datetime
    other_start: datetime
    other_end: datetime


class ConflictOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    entry: int
    title: str
    item: int
    class_: ItemClass = Field(alias="class")
    level: ItemLevel
    zones: list[list[str]] = Field(description="[this entry's zone, the other's zone] pairs that overlap")
    count: int = Field(description="How many occurrence pairs collide within the horizon")
    occurrences: list[Collision] = Field(description="The first colliding occurrences")

    @classmethod
    def of(cls, c: sch.Conflict) -> ConflictOut:
        return cls.model_validate(sch.conflict_dict(c))


class EntrySaved(BaseModel):
    entry: Entry
    conflicts: list[ConflictOut] = Field(description="Conflicts saved over (with force)")


class CheckResult(BaseModel):
    ok: bool = Field(description="True when there is no conflict")
    conflicts: list[ConflictOut]
    horizon_days: int
    next_occurrences: list[datetime] = Field(description="The first occurrences from now on (at most 10)")


class OccurrenceOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    entry: int
    title: str
    item: int
    start: datetime
    end: datetime
    zones: list[str]
    class_: ItemClass = Field(alias="class")
    level: ItemLevel
    policy: PolicyName

    @classmethod
    def of(cls, o: sch.Occurrence) -> OccurrenceOut:
        return cls.model_validate({"entry": o.entry_id, "title": o.title, "item": o.item_id, "start": o.start,
                                   "end": o.end, "zones": list(o.targets), "class": CLASSES[o.cls],
                                   "level": LEVELS[o.lvl], "policy": o.policy})


class OccurrenceList(BaseModel):
    items: list[OccurrenceOut]
    truncated: bool = Field(description="More occurrences than `limit`: ask for a shorter range")


class Firing(BaseModel):
    occurrence_at: datetime
    status: FiringStatus
    item: int | None
    broadcasts: list[int]
    detail: str | None
    claimed_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, f: sch.FiringRecord) -> Firing:
        return cls(occurrence_at=f.occurrence_at, status=f.status, item=f.item_id,  # type: ignore[arg-type]
                   broadcasts=list(f.broadcast_ids), detail=f.detail, claimed_at=f.claimed_at,
                   finished_at=f.finished_at)


class FiringPage(BaseModel):
    items: list[Firing]
    next_cursor: str | None

