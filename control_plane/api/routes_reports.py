"""/api/v1/reports: the as-played log, uptime, broadcast hours per commune and month; JSON pages or CSV.

Every report covers my scope (a ``zone`` filter narrows it to a subtree of it). With ``format=csv`` the whole
filtered report is streamed as one CSV file (UTF-8 with a byte order mark, times in Asia/Ho_Chi_Minh), read in
pages, each page one consistent snapshot; ``limit`` and ``cursor`` then do not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from loa.control_plane import alerts, auth, devices, levels, reports
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.errors import InvalidError
from loa.control_plane.settings import ControlPlane

router = APIRouter(prefix="/api/v1/reports", tags=["reports"], responses=PROBLEM_RESPONSES)
T = TypeVar("T")

ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?$"
MONTH = r"^(19|20|21)\d\d-(0[1-9]|1[0-2])$"
Time = Annotated[str | None, Query(pattern=ISO_TIME, description="ISO 8601 time; UTC when it has no offset",
                                   examples=["2025-03-01T07:00:00+07:00"])]
Month = Annotated[str | None, Query(pattern=MONTH, description="YYYY-MM, a month in Asia/Ho_Chi_Minh",
                                    examples=["2025-03"])]
Zone = Annotated[str | None, Query(pattern=m.CODE_PATTERN, description="Only this zone's subtree")]
DeviceFilter = Annotated[str | None, Query(pattern=m.DEVICE_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Format = Annotated[Literal["json", "csv"], Query(description="csv: the whole report as one CSV file")]
CSV_BATCH = 1000
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "The report: JSON, or with format=csv a CSV file"}}
DEFAULT_UPTIME_WINDOW = timedelta(days=7)


# -- models -----------------------------------------------------------------------------------------------------

class PlayedOut(BaseModel):
    id: int
    device: str
    device_name: str
    zone: str | None
    zone_name: str | None
    kind: str = Field(description="alert, live, scheduled, relay (broadcasts); fm, line, mic, local (sources)")
    src: str = Field(description="What the output played: ip, fm, line, local or mic")
    title: str
    bid: int | None
    content_id: str | None
    alert_id: int | None
    cls: Literal["normal", "priority", "emergency"] | None = Field(alias="class")
    level: Literal["commune", "district", "province", "national"] | None
    started_at: datetime
    ended_at: datetime | None
    ongoing: bool
    duration_ms: int = Field(description="Until now while ongoing")
    end_reason: str | None = Field(description="ended, preempted, interrupted, offline, cancelled, expired...")
    interrupted_by: str | None
    interrupted_by_bid: int | None

    @classmethod
    def of(cls, r: reports.PlayedRow) -> PlayedOut:
        return cls.model_validate({
            "id": r.id, "device": r.device_id, "device_name": r.device_name, "zone": r.zone, "zone_name": r.zone_name,
            "kind": r.kind, "src": r.src, "title": r.title, "bid": r.bid, "content_id": r.content_id,
            "alert_id": r.alert_id, "class": alerts.CLASSES[r.cls] if r.cls is not None else None,
            "level": levels.LEVEL_NAMES[r.lvl] if r.lvl is not None else None, "started_at": r.started_at,
            "ended_at": r.ended_at, "ongoing": r.ended_at is None, "duration_ms": r.duration_ms,
            "end_reason": r.end_reason, "interrupted_by": r.interrupted_by, "interrupted_by_bid": r.interrupted_by_bid,
        })


class PlayedPage(BaseModel):
    items: list[PlayedOut]
    next_cursor: str | None


class UptimeOut(BaseModel):
    device: str | None = Field(description="The device (by=device)")
    commune: str | None = Field(description="The commune (by=commune)")
    name: str
    zone: str | None
    devices: int
    online_s: float
    observed_s: float = Field(description="The window, clipped to after enrolment and to now, summed over devices")
    fraction: float | None = Field(description="online / observed; null when nothing was observed")


class UptimePage(BaseModel):
    since: datetime
    until: datetime
    by: Literal["device", "commune"]
    items: list[UptimeOut]
    next_cursor: str | None


class HoursOut(BaseModel):
    month: str
    commune: str
    name: str
    hours: float = Field(description="Sum of the as-played durations of the commune's devices in the month")
    played_ms: int
    plays: int
    devices: int


class HoursPage(BaseModel):
    months: list[str]
    items: list[HoursOut]
    next_cursor: str | None


# -- helpers ----------------------------------------------------------------------------------------------------

def _utc(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidError(f"{name}: {text!r} is not a valid time") from None
    if not 1900 <= when.year <= 9998:
        raise InvalidError(f"{name}: {text!r} is out of range (years 1900-9998)")
    return when


def _check_filters(conn: Connection, caller: auth.Principal, zone: str | None, device: str | None) -> None:
    if zone is not None:
        auth.require_zone(conn, caller, zone)
    if device is not None:
        auth.require_zone(conn, caller, devices.get(conn, device).zone)


def _csv(cp: ControlPlane, name: str, header: Sequence[str], page: Callable[[Connection, Any], tuple[list[T], Any]],
         row: Callable[[T], Sequence[Any]]) -> StreamingResponse:
    """Stream a CSV of every item ``page(conn, cursor) -> (items, next cursor or None)`` yields."""

    def rows() -> Iterator[Sequence[Any]]:
        cursor = None
        while True:
            with cp.db.read() as conn:
                items, cursor = page(conn, cursor)
            yield from (row(item) for item in items)
            if cursor is None:
                return

    filename = f"{name}.csv"
    return StreamingResponse(reports.csv_text(header, rows()), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


# -- as played --------------------------------------------------------------------------------------------------

def _played_cursor(cursor: str | None) -> tuple[int, int] | None:
    key = decode_cursor(cursor, list)
    if key is None:
        return None
    if len(key) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) for k in key):
        raise InvalidError("cursor: not a cursor this API returned")
    return key[0], key[1]


@router.get("/as-played", response_model=PlayedPage, responses=CSV_RESPONSE, **guard("reports.read"))
def as_played(*, cp: CP, caller: Caller, zone: Zone = None, device: DeviceFilter = None,
              kind: Annotated[str | None, Query(pattern=r"^[a-z]{1,16}$")] = None, since: Time = None,
              until: Time = None, limit: Limit = 100, cursor: str | None = None,
              format: Format = "json") -> Any:
    """What each device played, when, for how long, and what interrupted it; by start time. ``since`` and
    ``until`` keep what overlaps that window."""
    start, end = _utc(since, "since"), _utc(until, "until")
    with cp.db.read() as conn:
        _check_filters(conn, caller, zone, device)

    def page(conn: Connection, after: Any, size: int) -> tuple[list[reports.PlayedRow], Any]:
        found = reports.as_played_rows(conn, now=cp.db.clock(), within=caller.scope, zone=zone, device=device,
                                       kind=kind, since=start, until=end, after=after, limit=size + 1)
        more = len(found) > size
        found = found[:size]
        return found, ((found[-1].started_ms, found[-1].id) if more else None)

    if format == "csv":
        return _csv(cp, "as-played", (
            "id", "device", "device_name", "zone", "zone_name", "kind", "source", "title", "bid", "content_id",
            "alert_id", "class", "level", "started (Asia/Ho_Chi_Minh)", "ended (Asia/Ho_Chi_Minh)", "duration_s",
            "end_reason", "interrupted_by"), lambda conn, after: page(conn, after, CSV_BATCH), lambda r: (
            r.id, r.device_id, r.device_name, r.zone, r.zone_name, r.kind, r.src, r.title, r.bid, r.content_id,
            r.alert_id, alerts.CLASSES[r.cls] if r.cls is not None else None,
            levels.LEVEL_NAMES[r.lvl] if r.lvl is not None else None, r.started_at, r.ended_at,
            f"{r.duration_ms / 1000:.3f}", r.end_reason, r.interrupted_by))
    with cp.db.read() as conn:
        found, last = page(conn, _played_cursor(cursor), limit)
    return PlayedPage(items=[PlayedOut.of(r) for r in found],
                      next_cursor=encode_cursor(list(last)) if last else None)


# -- uptime -----------------------------------------------------------------------------------------------------

@router.get("/uptime", response_model=UptimePage, responses=CSV_RESPONSE, **guard("reports.read"))
def uptime(*, cp: CP, caller: Caller, by: Literal["device", "commune"] = "device", zone: Zone = None,
           device: DeviceFilter = None, since: Time = None, until: Time = None, limit: Limit = 100,
           cursor: str | None = None, format: Format = "json") -> Any:
    """Online time over observed time, per device or per commune, over ``[since, until)`` (default: the last
    7 days), from the devices' online/offline history."""
    now = cp.db.clock()
    end = _utc(until, "until") or now
    start = _utc(since, "since") or end - DEFAULT_UPTIME_WINDOW
    if end <= start:
        raise InvalidError("until must come after since")
    with cp.db.read() as conn:
        _check_filters(conn, caller, zone, device)

    def page(conn: Connection, after: str | None, size: int) -> tuple[list[UptimeOut], str | None]:
        items: list[UptimeOut]
        if by == "device":
            found_d = reports.uptime_by_device(conn, start=start, end=end, now=now, within=caller.scope, zone=zone,
                                               device=device, after=after, limit=size + 1)
            items = [UptimeOut(device=u.device_id, commune=None, name=u.name, zone=u.zone, devices=1,
                               online_s=_seconds(u.online), observed_s=_seconds(u.observed), fraction=u.fraction)
                     for u in found_d]
            keys = [u.device_id for u in found_d]
        else:
            if device is not None:
                raise InvalidError("device filters the per-device report (by=device)")
            found_c = reports.uptime_by_commune(conn, start=start, end=end, now=now, within=caller.scope,
                                                zone=zone, after=after, limit=size + 1)
            items = [UptimeOut(device=None, commune=c.commune, name=c.name, zone=c.commune, devices=c.devices,
                               online_s=_seconds(c.online), observed_s=_seconds(c.observed), fraction=c.fraction)
                     for c in found_c]
            keys = [c.commune for c in found_c]
        more = len(items) > size
        return items[:size], (keys[size - 1] if more else None)

    if format == "csv":
        return _csv(cp, f"uptime-by-{by}", (by, "name", "zone", "devices", "online_s", "observed_s", "uptime_percent"),
                    lambda conn, after: page(conn, after, CSV_BATCH), lambda u: (
                        u.device or u.commune, u.name, u.zone, u.devices, f"{u.online_s:.3f}", f"{u.observed_s:.3f}",
                        "" if u.fraction is None else f"{100 * u.fraction:.2f}"))
    with cp.db.read() as conn:
        items, last = page(conn, decode_cursor(cursor, str), limit)
    return UptimePage(since=start, until=end, by=by, items=items, next_cursor=encode_cursor(last) if last else None)


# -- broadcast hours --------------------------------------------------------------------------------------------

def _hours_cursor(cursor: str | None) -> tuple[str, str] | None:
    key = decode_cursor(cursor, list)
    if key is None:
        return None
    if len(key) != 2 or not all(isinstance(k, str) for k in key):
        raise InvalidError("cursor: not a cursor this API returned")
    return key[0], key[1]


@router.get("/broadcast-hours", response_model=HoursPage, responses=CSV_RESPONSE, **guard("reports.read"))
def broadcast_hours(*, cp: CP, caller: Caller, zone: Zone = None, from_month: Month = None, to_month: Month = None,
                    limit: Limit = 100, cursor: str | None = None, format: Format = "json") -> Any:
    """Hours played per commune per month (Asia/Ho_Chi_Minh months, each play clipped to its month), every
    commune of my scope included; from ``from_month`` to ``to_month`` (default: this month; at most 36)."""
    now = cp.db.clock()
    this_month = reports.local_month(now)
    months = reports.month_range(from_month or to_month or this_month, to_month or from_month or this_month)
    with cp.db.read() as conn:
        _check_filters(conn, caller, zone, None)

    def page(conn: Connection, after: tuple[str, str] | None, size: int) -> tuple[list[HoursOut], Any]:
        found = reports.broadcast_hours(conn, months=months, now=now, within=caller.scope, zone=zone, after=after,
                                        limit=size + 1)
        more = len(found) > size
        found = found[:size]
        items = [HoursOut(month=h.month, commune=h.commune, name=h.name, hours=h.hours, played_ms=h.played_ms,
                          plays=h.plays, devices=h.devices) for h in found]
        return items, ((found[-1].month, found[-1].commune) if more else None)

    if format == "csv":
        return _csv(cp, "broadcast-hours", ("month", "commune", "name", "hours", "plays", "devices"),
                    lambda conn, after: page(conn, after, CSV_BATCH),
                    lambda h: (h.month, h.commune, h.name, f"{h.hours:.3f}", h.plays, h.devices))
    with cp.db.read() as conn:
        items, last = page(conn, _hours_cursor(cursor), limit)
    return HoursPage(months=months, items=items, next_cursor=encode_cursor(list(last)) if last else None)
