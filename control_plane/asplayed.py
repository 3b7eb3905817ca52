"""Ingest of what devices played: the broadcast log (server side) and the as-played log (per device).

The server records each broadcast it starts and stops (:func:`broadcast_started`, :func:`broadcast_ended`):
its bid, kind, title, content, class and level. Devices report what their output plays (``state``: bid, source,
since; PROTOCOL.md 4.4) and, in conformance test mode only, the frames they played (``played``); the streamer
wiring passes them in batches to :func:`record_many` (:func:`record` takes one). A device's as-played log is a
sequence of rows, one per stretch of one thing played; at most one row per device is open (no end yet).

A new ``state`` closes the device's open row at its ``since`` and says why it ended:

| What happened | ``end_reason`` | ``interrupted_by`` |
|---|---|---|
| the broadcast had ended (the server's record says so, within 2 s) | ``ended`` | |
| the output went idle | ``ended`` | |
| a broadcast of higher rank (``cls × 4 + lvl``) took over | ``preempted`` | its title, and its bid |
| a broadcast of equal or lower rank took over (a waiting one resumed) | ``ended`` | |
| a local source took over (microphone, line-in, FM) | ``interrupted`` | the source |
| the device went offline (:class:`DeviceOffline`) | ``offline`` | |
| the server ended the broadcast (:func:`broadcast_ended`) | the reason given | |

Reports are idempotent and order-tolerant: a repeat of the current state changes nothing; a report older than
the open row is ignored. ``since`` is the device's estimate of server time: one more than 30 s in the future or
more than a day old (a device whose clock is not yet synchronised) is taken as the time of receipt.

Failure semantics: :class:`NotFoundError` for an unknown device, :class:`InvalidError` for an unknown source;
nothing is written then. Writes happen in the caller's transaction; nothing here is audited (reports are not
anyone's change) and the device row is locked, so concurrent reports of one device take turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from loa.control_plane.db import Tx
from loa.control_plane.db.schema import BROADCAST_KINDS, NAME_LEN, PLAYED_SOURCES, as_played, broadcast_log, devices
from loa.control_plane.errors import InvalidError, NotFoundError
from loa.protocol.control import Played, State

__all__ = [
    "BroadcastStart",
    "DeviceOffline",
    "PlayedReport",
    "Report",
    "StateReport",
    "broadcast_ended",
    "broadcast_started",
    "from_message",
    "ms",
    "record",
    "record_many",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHUNK = 500  # ids per IN (...) list: well inside every backend's limit on bound parameters
_ENDED_SLACK = timedelta(seconds=2)
_FUTURE = timedelta(seconds=30)
_PAST = timedelta(days=1)
SOURCE_TITLES = {"fm": "FM", "line": "Line-in", "mic": "Microphone", "local": "Local programme"}


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastStart:
    bid: int
    kind: str
    zones: tuple[str, ...]
    at: datetime
    title: str = ""
    cls: int = 0
    lvl: int = 0
    content_id: str | None = None
    alert_id: int | None = None


@dataclass(frozen=True, slots=True)
class StateReport:
    """A device's ``state``: ``bid`` (None: no broadcast), ``src`` (``ip``, ``fm``, ``line``, ``local``, ``mic``,
    ``idle``), ``since_ns`` (server time, ns)."""

    bid: int | None
    src: str
    since_ns: int


@dataclass(frozen=True, slots=True)
class PlayedReport:
    """Frames of broadcast ``bid`` played from ``first_ns`` to ``last_ns`` (the conformance test hook)."""

    bid: int
    first_ns: int
    last_ns: int


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    at: datetime | None = None


Report = StateReport | PlayedReport | DeviceOffline


def ms(when: datetime) -> int:
    """Milliseconds since 1970 (floor), as the report sums use them."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


def _time(ns: int, now: datetime) -> datetime:
    if not (now - _PAST) <= _EPOCH + timedelta(microseconds=ns // 1000) <= now + _FUTURE:
        return now
    return _EPOCH + timedelta(microseconds=ns // 1000)


def from_message(message: State | Played) -> list[Report]:
    """The reports in a device's ``state`` or ``played`` message (one per bid for ``played``)."""
    if isinstance(message, State):
        return [StateReport(message.bid, message.src, message.since)]
    spans: dict[int, tuple[int, int]] = {}
    for frame in message.log:
        first, last = spans.get(frame.bid, (frame.at, frame.at))
        spans[frame.bid] = (min(first, frame.at), max(last, frame.at))
    return [PlayedReport(bid, first, last) for bid, (first, last) in spans.items()]


def broadcast_started(tx: Tx, start: BroadcastStart) -> int:
    """Record a broadcast the server started; returns the log row id."""
    if start.kind not in BROADCAST_KINDS:
        raise InvalidError(f"broadcast kind must be one of {', '.join(BROADCAST_KINDS)}")
    result = tx.conn.execute(insert(broadcast_log).values(
        bid=start.bid, kind=start.kind, title=start.title[:NAME_LEN], content_id=start.content_id,
        alert_id=start.alert_id, cls=start.cls, lvl=start.lvl, zones=list(start.zones), started_at=start.at))
    (row_id,) = result.inserted_primary_key or (0,)
    return int(row_id)


def broadcast_ended(tx: Tx, bid: int, *, at: datetime, reason: str = "ended") -> bool:
    """Record that broadcast ``bid`` (its latest start) ended at ``at``, and close the device rows still open on
    it. False if no such broadcast is running (already ended, or never recorded)."""
    row = tx.conn.execute(select(broadcast_log.c.id).where(broadcast_log.c.bid == bid)
                          .order_by(broadcast_log.c.id.desc()).limit(1)).one_or_none()
    changed = False
    if row is not None:
        done = tx.conn.execute(update(broadcast_log).where(broadcast_log.c.id == row.id,
                                                           broadcast_log.c.ended_at.is_(None))
                               .values(ended_at=at, end_reason=reason[:32]))
        changed = done.rowcount == 1
    for open_row in tx.conn.execute(select(as_played.c.id, as_played.c.started_at).where(
            as_played.c.bid == bid, as_played.c.ended_ms.is_(None))).all():
        _close(tx, open_row.id, max(at, open_row.started_at), reason[:16])
    return changed


def _close(tx: Tx, row_id: int, at: datetime, reason: str, by: tuple[str, int | None] | None = None) -> None:
    tx.conn.execute(update(as_played).where(as_played.c.id == row_id).values(
        ended_at=at, ended_ms=ms(at), end_reason=reason,
        interrupted_by=by[0][:NAME_LEN] if by else None, interrupted_by_bid=by[1] if by else None))


def _broadcasts(tx: Tx, bids: Sequence[int]) -> dict[int, Any]:
    """The latest broadcast log row of each of ``bids`` that has one."""
    out: dict[int, Any] = {}
    for start in range(0, len(bids), _CHUNK):
        for row in tx.conn.execute(select(broadcast_log).where(broadcast_log.c.bid.in_(bids[start:start + _CHUNK]))
                                   .order_by(broadcast_log.c.id)):
            out[row.bid] = row
    return out


def _describe(known: dict[int, Any], bid: int | None, src: str) -> dict[str, Any]:
    if bid is None:
        return {"bid": None, "src": src, "kind": src, "title": SOURCE_TITLES[src], "content_id": None,
                "alert_id": None, "cls": None, "lvl": None}
    row = known.get(bid)
    if row is None:
        return {"bid": bid, "src": src, "kind": "scheduled" if src == "local" else "live",
                "title": f"broadcast {bid}", "content_id": None, "alert_id": None, "cls": None, "lvl": None}
    return {"bid": bid, "src": src, "kind": row.kind, "title": row.title or f"broadcast {bid}",
            "content_id": row.content_id, "alert_id": row.alert_id, "cls": row.cls, "lvl": row.lvl}


def _rank(cls: int | None, lvl: int | None) -> int | None:
    return None if cls is None or lvl is None else cls * 4 + lvl


def _why(known: dict[int, Any], old: _Row, new: dict[str, Any] | None,
         at: datetime) -> tuple[str, tuple[str, int | None] | None]:
    if old.bid is not None:
        row = known.get(old.bid)
        if row is not None and row.ended_at is not None and row.ended_at <= at + _ENDED_SLACK:
            return "ended", None
    if new is None:
        return "ended", None
    if new["bid"] is None:
        return "interrupted", (new["title"], None)
    old_rank, new_rank = _rank(old.cls, old.lvl), _rank(new["cls"], new["lvl"])
    if old_rank is not None and new_rank is not None and new_rank <= old_rank:
        return "ended", None
    return "preempted", (new["title"], new["bid"])


def record(tx: Tx, device_id: str, report: Report) -> None:
    """Fold one report of ``device_id`` into its as-played log (rules in the module docstring)."""
    record_many(tx, [(device_id, report)])


@dataclass(slots=True)
class _Row:
    """A device's open row while a batch is folded: one already in the table (``id``), or one the batch adds
    (``values``, inserted at the end; closing it fills in its end there)."""

    id: int | None
    bid: int | None
    src: str
    cls: int | None
    lvl: int | None
    started_at: datetime
    values: dict[str, Any] | None = None


def _check(report: Report) -> None:
    if isinstance(report, StateReport) and report.src != "idle" and report.src not in PLAYED_SOURCES:
        raise InvalidError(f"state.src must be one of {', '.join((*PLAYED_SOURCES, 'idle'))}")
    bid = getattr(report, "bid", None)
    if bid is not None and not 0 <= bid <= 0xFFFF_FFFF:
        raise InvalidError("state.bid is a uint32")


def record_many(tx: Tx, reports: Sequence[tuple[str, Report]]) -> None:
    """Fold ``(device_id, report)`` pairs, in order, into the as-played logs: what :func:`record` of each in turn
    would write, in a few statements whatever the count (one read of the devices, of their open rows and of the
    broadcasts named, one update of the rows closed, one insert of the rows opened), which is what lets the data
    plane keep up with ten thousand devices reporting an alert at once. Every report is checked first: for an
    unknown device (:class:`NotFoundError`) or a bad report (:class:`InvalidError`) nothing is written."""
    if not reports:
        return
    for _, report in reports:
        _check(report)
    idents = sorted({ident for ident, _ in reports})
    zone_of: dict[str, str | None] = {}
    open_rows: dict[str, list[_Row]] = {ident: [] for ident in idents}
    for start in range(0, len(idents), _CHUNK):  # devices locked in id order, as concurrent batches take them
        chunk = idents[start:start + _CHUNK]
        locked = select(devices.c.id, devices.c.zone).where(devices.c.id.in_(chunk)).order_by(devices.c.id)
        zone_of.update((row.id, row.zone) for row in tx.conn.execute(locked.with_for_update()))
        for row in tx.conn.execute(select(as_played).where(as_played.c.device_id.in_(chunk),
                                                           as_played.c.ended_ms.is_(None))
                                   .order_by(as_played.c.started_ms, as_played.c.id)):
            open_rows[row.device_id].append(_Row(row.id, row.bid, row.src, row.cls, row.lvl, row.started_at))
    missing = [ident for ident in idents if ident not in zone_of]
    if missing:
        raise NotFoundError(f"no device {missing[0]!r}")
    bids = {getattr(report, "bid", None) for _, report in reports}
    bids |= {row.bid for rows in open_rows.values() for row in rows}
    known = _broadcasts(tx, sorted(bid for bid in bids if bid is not None))
    closed: list[dict[str, Any]] = []
    opened: list[dict[str, Any]] = []

    def close(rows: list[_Row], at: datetime, reason: str, by: tuple[str, int | None] | None = None) -> None:
        row = rows.pop()
        end = {"ended_at": at, "ended_ms": ms(at), "end_reason": reason,
               "interrupted_by": by[0][:NAME_LEN] if by else None, "interrupted_by_bid": by[1] if by else None}
        if row.values is not None:
            row.values.update(end)
        else:
            closed.append({"row_id": row.id, **{f"new_{k}": v for k, v in end.items()}})

    for ident, report in reports:
        rows = open_rows[ident]
        current = rows[-1] if rows else None
        if isinstance(report, DeviceOffline):
            if current is not None:
                close(rows, max(report.at or tx.now, current.started_at), "offline")
            continue
        if isinstance(report, PlayedReport):
            if current is not None and current.bid == report.bid:
                continue
            state = StateReport(report.bid, "ip", report.first_ns)
        else:
            state = report
        since = _time(state.since_ns, tx.now)
        if current is not None:
            if (current.bid, current.src) == (state.bid, state.src):
                continue
            if since < current.started_at:
                continue
        new = _describe(known, state.bid, state.src) if state.src != "idle" else None
        if current is not None:
            close(rows, since, *_why(known, current, new, since))
        if new is not None:
            values = {"device_id": ident, "zone": zone_of[ident], "started_at": since, "started_ms": ms(since), **new,
                      "ended_at": None, "ended_ms": None, "end_reason": None, "interrupted_by": None,
                      "interrupted_by_bid": None}
            opened.append(values)
            rows.append(_Row(None, new["bid"], new["src"], new["cls"], new["lvl"], since, values))
    if closed:
        tx.conn.execute(update(as_played).where(as_played.c.id == bindparam("row_id")).values(
            ended_at=bindparam("new_ended_at"), ended_ms=bindparam("new_ended_ms"),
            end_reason=bindparam("new_end_reason"), interrupted_by=bindparam("new_interrupted_by"),
            interrupted_by_bid=bindparam("new_interrupted_by_bid")), closed)
    if opened:
        tx.conn.execute(insert(as_played), opened)
