"""Reports: the as-played log, uptime per device and per commune, broadcast hours per commune per month; CSV.

*Uptime* of a device over a window is the time it was online divided by the time it was observed: the window
clipped to after its enrolment and to now. Its state at any instant is that of its last online/offline transition
at or before it (offline before the first one). A commune's uptime sums its devices' online and observed times.

*Broadcast hours* of a commune in a month are the sum of the as-played durations of its devices (so two speakers
playing one hour make two hours), each row clipped to the month, months being calendar months in
Asia/Ho_Chi_Minh. A row still open counts until now. The commune of a device is the nearest zone at or above its
zone whose level is commune (:func:`loa.control_plane.levels.commune_of`); as-played rows keep the zone the
device had when it played.

CSV files are UTF-8 with a byte order mark (Excel then reads Vietnamese names right), CRLF line ends, times in
Asia/Ho_Chi_Minh, and text cells that a spreadsheet would take for a formula prefixed with ``'``.

Every function here only reads; ``within`` is the caller's scope (None: national), ``zone`` an optional filter
that the caller has checked lies within it.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, case, func, or_, select

from loa.control_plane import levels
from loa.control_plane import zones as zn
from loa.control_plane.asplayed import ms
from loa.control_plane.db.schema import as_played, device_status_history, devices, zones
from loa.control_plane.errors import InvalidError

__all__ = [
    "LOCAL",
    "CommuneHours",
    "CommuneUptime",
    "DeviceUptime",
    "PlayedRow",
    "as_played_rows",
    "broadcast_hours",
    "csv_text",
    "local_text",
    "month_bounds",
    "month_range",
    "online_time",
    "uptime_by_commune",
    "uptime_by_device",
]

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
MAX_MONTHS = 36
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


# -- arithmetic -------------------------------------------------------------------------------------------------

def online_time(changes: Iterable[tuple[datetime, bool]], *, start: datetime, end: datetime,
                initial: bool = False) -> timedelta:
    """Time online within ``[start, end)``. ``changes`` are ``(at, online)`` transitions in the order they
    happened (ties: the later one wins); the state at an instant is that of the last transition at or before it,
    ``initial`` before any."""
    total, online, since = timedelta(0), initial, start
    if end <= start:
        return total
    for at, state in changes:
        if at >= end:
            break
        if at <= start:
            online = state
            continue
        if online:
            total += at - since
        online, since = state, at
    if online:
        total += end - since
    return total


def _month(month: str) -> tuple[int, int]:
    try:
        year, number = (int(part) for part in month.split("-"))
        datetime(year, number, 1)
    except ValueError:
        raise InvalidError(f"month {month!r} is not YYYY-MM") from None
    if not 1900 <= year <= 9998:
        raise InvalidError(f"month {month!r} is out of range (1900-9998)")
    return year, number


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` -> its first instant and the next month's, in UTC, for months of Asia/Ho_Chi_Minh."""
    year, number = _month(month)
    first = datetime(year, number, 1, tzinfo=LOCAL)
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=LOCAL)
    return first.astimezone(UTC), following.astimezone(UTC)


def month_range(first: str, last: str) -> list[str]:
    """Months ``YYYY-MM`` from ``first`` to ``last`` inclusive (at most :data:`MAX_MONTHS`)."""
    current, end = _month(first), _month(last)
    if current > end:
        raise InvalidError(f"the months run backwards ({first} to {last})")
    out: list[str] = []
    while current <= end:
        if len(out) == MAX_MONTHS:
            raise InvalidError(f"a report covers at most {MAX_MONTHS} months")
        out.append(f"{current[0]:04d}-{current[1]:02d}")
        current = (current[0] + current[1] // 12, current[1] % 12 + 1)
    return out


def local_month(when: datetime) -> str:
    return when.astimezone(LOCAL).strftime("%Y-%m")


def local_text(when: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in Asia/Ho_Chi_Minh (what a spreadsheet reads as a time), '' for None."""
    return "" if when is None else when.astimezone(LOCAL).strftime("%Y-%m-%d %H:%M:%S")


# -- zone maps --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Tree:
    parents: dict[str, str | None]
    levels: dict[str, str | None]
    names: dict[str, str]

    def commune(self, zone: str) -> str:
        return levels.commune_of(zone, self.parents, self.levels)

    def communes(self, root: str | None) -> list[str]:
        """The communes at or below ``root`` (everywhere for None)."""
        found = [code for code, level in self.levels.items() if levels.level_of(level) == levels.COMMUNE]
        if root is None:
            return found
        return [code for code in found if self._below(code, root)]

    def _below(self, code: str, root: str) -> bool:
        current: str | None = code
        for _ in range(zn.MAX_DEPTH + 2):
            if current is None:
                return False
            if current == root:
                return True
            current = self.parents.get(current)
        return False


def _tree(conn: Connection, root: str | None) -> _Tree:
    query = select(zones.c.code, zones.c.parent, zones.c.level, zones.c.name)
    if root is not None:
        codes = set(zn.ancestors(conn, root))
        query = query.where(or_(zones.c.code.in_(zn.subtree_codes(root)), zones.c.code.in_(codes)))
    parents, kinds, names = {}, {}, {}
    for row in conn.execute(query):
        parents[row.code], kinds[row.code], names[row.code] = row.parent, row.level, row.name
    return _Tree(parents, kinds, names)


def _root(within: str | None, zone: str | None) -> str | None:
    return zone if zone is not None else within


# -- as played --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PlayedRow:
    id: int
    device_id: str
    device_name: str
    zone: str | None
    zone_name: str | None
    kind: str
    src: str
    title: str
    bid: int | None
    content_id: str | None
    alert_id: int | None
    cls: int | None
    lvl: int | None
    started_at: datetime
    ended_at: datetime | None
    started_ms: int
    duration_ms: int
    end_reason: str | None
    interrupted_by: str | None
    interrupted_by_bid: int | None


def as_played_rows(conn: Connection, *, now: datetime, within: str | None = None, zone: str | None = None,
                   device: str | None = None, kind: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, after: tuple[int, int] | None = None,
                   limit: int = 100) -> list[PlayedRow]:
    """As-played rows by start time (then id), overlapping ``[since, until)``; keyset-paginated by ``after``,
    the ``(started_ms, id)`` of the last row seen."""
    query = (select(as_played, devices.c.name.label("device_name"), zones.c.name.label("zone_name"))
             .select_from(as_played.join(devices, devices.c.id == as_played.c.device_id)
                          .outerjoin(zones, zones.c.code == as_played.c.zone))
             .order_by(as_played.c.started_ms, as_played.c.id).limit(limit))
    for root in (within, zone):
        if root is not None:
            query = query.where(as_played.c.zone.in_(zn.subtree_codes(root)))
    if device is not None:
        query = query.where(as_played.c.device_id == device)
    if kind is not None:
        query = query.where(as_played.c.kind == kind)
    if since is not None:
        query = query.where(or_(as_played.c.ended_ms.is_(None), as_played.c.ended_ms > ms(since)))
    if until is not None:
        query = query.where(as_played.c.started_ms < ms(until))
    if after is not None:
        query = query.where(or_(as_played.c.started_ms > after[0],
                                and_(as_played.c.started_ms == after[0], as_played.c.id > after[1])))
    now_ms = ms(now)
    return [PlayedRow(
        id=r.id, device_id=r.device_id, device_name=r.device_name, zone=r.zone, zone_name=r.zone_name, kind=r.kind,
        src=r.src, title=r.title, bid=r.bid, content_id=r.content_id, alert_id=r.alert_id, cls=r.cls, lvl=r.lvl,
        started_at=r.started_at, ended_at=r.ended_at, started_ms=r.started_ms,
        duration_ms=max(0, (r.ended_ms if r.ended_ms is not None else now_ms) - r.started_ms),
        end_reason=r.end_reason, interrupted_by=r.interrupted_by, interrupted_by_bid=r.interrupted_by_bid,
    ) for r in conn.execute(query)]


# -- uptime -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeviceUptime:
    device_id: str
    name: str
    zone: str | None
    online: timedelta
    observed: timedelta

    @property
    def fraction(self) -> float | None:
        return self.online / self.observed if self.observed > timedelta(0) else None


@dataclass(frozen=True, slots=True)
class CommuneUptime:
    commune: str
    name: str
    devices: int
    online: timedelta
    observed: timedelta

    @property
    def fraction(self) -> float | None:
        return self.online / self.observed if self.observed > timedelta(0) else None


def _uptimes(conn: Connection, rows: Sequence[Any], start: datetime, end: datetime) -> list[DeviceUptime]:
    """Uptime of each device row (``id``, ``name``, ``zone``, ``enrolled_at``) over ``[start, end)``."""
    ids = [r.id for r in rows]
    changes: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    if ids:
        h = device_status_history
        ranked = select(h.c.device_id, h.c.at, h.c.online, func.row_number().over(
            partition_by=h.c.device_id, order_by=(h.c.at.desc(), h.c.id.desc())).label("n")).where(
            h.c.device_id.in_(ids), h.c.at <= start).subquery()
        for r in conn.execute(select(ranked.c.device_id, ranked.c.at, ranked.c.online).where(ranked.c.n == 1)):
            changes[r.device_id].append((r.at, r.online))
        query = (select(h.c.device_id, h.c.at, h.c.online)
                 .where(h.c.device_id.in_(ids), h.c.at > start, h.c.at < end).order_by(h.c.device_id, h.c.at, h.c.id))
        for r in conn.execute(query):
            changes[r.device_id].append((r.at, r.online))
    out = []
    for r in rows:
        first = max(start, r.enrolled_at)
        observed = max(timedelta(0), end - first)
        online = online_time(changes.get(r.id, ()), start=first, end=end) if observed else timedelta(0)
        out.append(DeviceUptime(r.id, r.name, r.zone, online, observed))
    return out


def _devices(conn: Connection, root: str | None, device: str | None = None, after: str | None = None,
             limit: int | None = None) -> list[Any]:
    query = select(devices.c.id, devices.c.name, devices.c.zone, devices.c.enrolled_at).order_by(devices.c.id)
    if root is not None:
        query = query.where(devices.c.zone.in_(zn.subtree_codes(root)))
    if device is not None:
        query = query.where(devices.c.id == device)
    if after is not None:
        query = query.where(devices.c.id > after)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query))


def _window(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    if end <= start:
        raise InvalidError("the report's end must come after its start")
    return start, max(start, min(end, now))


def uptime_by_device(conn: Connection, *, start: datetime, end: datetime, now: datetime, within: str | None = None,
                     zone: str | None = None, device: str | None = None, after: str | None = None,
                     limit: int = 100) -> list[DeviceUptime]:
    """Uptime of each device in scope over ``[start, end)`` (clipped to now), by device id."""
    start, end = _window(start, end, now)
    rows = _devices(conn, _root(within, zone), device, after, limit)
    return _uptimes(conn, rows, start, end)


def uptime_by_commune(conn: Connection, *, start: datetime, end: datetime, now: datetime,
                      within: str | None = None, zone: str | None = None, after: str | None = None,
                      limit: int = 100) -> list[CommuneUptime]:
    """Uptime of each commune in scope (devices in no zone are left out), by commune code."""
    start, end = _window(start, end, now)
    root = _root(within, zone)
    tree = _tree(conn, root)
    groups: dict[str, list[Any]] = {code: [] for code in tree.communes(root)}
    for row in _devices(conn, root):
        if row.zone is not None:
            groups.setdefault(tree.commune(row.zone), []).append(row)
    codes = sorted(code for code in groups if after is None or code > after)[:limit]
    wanted = [row for code in codes for row in groups[code]]
    by_id = {u.device_id: u for u in _uptimes(conn, wanted, start, end)}
    out = []
    for code in codes:
        members = [by_id[row.id] for row in groups[code]]
        out.append(CommuneUptime(code, tree.names.get(code, code), len(members),
                                 sum((m.online for m in members), timedelta(0)),
                                 sum((m.observed for m in members), timedelta(0))))
    return out


# -- broadcast hours --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CommuneHours:
    month: str
    commune: str
    name: str
    played_ms: int
    plays: int
    devices: int

    @property
    def hours(self) -> float:
        return round(self.played_ms / 3_600_000, 3)


def broadcast_hours(conn: Connection, *, months: Sequence[str], now: datetime, within: str | None = None,
                    zone: str | None = None, after: tuple[str, str] | None = None,
                    limit: int = 100) -> list[CommuneHours]:
    """Played time per commune per month, by (month, commune); every commune in scope appears, zeros included.
    ``after`` is the ``(month, commune)`` of the last item seen."""
    root = _root(within, zone)
    tree = _tree(conn, root)
    communes = tree.communes(root)
    now_ms = ms(now)
    out: list[CommuneHours] = []
    for month in months:
        if after is not None and month < after[0]:
            continue
        lo_time, hi_time = month_bounds(month)
        lo, hi = ms(lo_time), ms(hi_time)
        end = func.coalesce(as_played.c.ended_ms, now_ms)
        clipped = (case((end > hi, hi), else_=end)
                   - case((as_played.c.started_ms < lo, lo), else_=as_played.c.started_ms))
        query = (select(as_played.c.zone, as_played.c.device_id, func.sum(clipped).label("played"),
                        func.count().label("plays"))
                 .where(as_played.c.started_ms < hi, end > lo, as_played.c.zone.is_not(None))
                 .group_by(as_played.c.zone, as_played.c.device_id))
        if root is not None:
            query = query.where(as_played.c.zone.in_(zn.subtree_codes(root)))
        played: dict[str, int] = dict.fromkeys(communes, 0)
        plays: dict[str, int] = dict.fromkeys(communes, 0)
        members: dict[str, set[str]] = {code: set() for code in communes}
        for row in conn.execute(query):
            code = tree.commune(row.zone)
            played[code] = played.get(code, 0) + int(row.played or 0)
            plays[code] = plays.get(code, 0) + int(row.plays)
            members.setdefault(code, set()).add(row.device_id)
        for code in sorted(played):
            if after is not None and (month, code) <= after:
                continue
            out.append(CommuneHours(month, code, tree.names.get(code, code), played[code], plays[code],
                                    len(members[code])))
            if len(out) >= limit:
                return out
    return out


# -- CSV --------------------------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return local_text(value)
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = True) -> Iterator[str]:
    """The CSV, in pieces: a byte order mark (if ``bom``), the header, then one piece per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    yield ("\ufeff" if bom else "") + buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(v) for v in row])
        yield buffer.getvalue()
