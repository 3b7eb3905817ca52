"""Ingest of what devices played: the broadcast log (server side) and the as-played log (per device).

The server records each broadcast it starts and stops (:func:`broadcast_started`, :func:`broadcast_ended`):
its bid, kind, title, content, class and level. Devices report what their output plays (``state``: bid, source,
since; PROTOCOL.md 4.4) and, in conformance test mode only, the frames they played (``played``); the streamer
wiring passes each report to :func:`record`. A device's as-played log is a sequence of rows, one per stretch of
one thing played; at most one row per device is open (no end yet).

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

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from loa.control_plane.db import Tx
from loa.control_plane.db.schema import BROADCAST_KINDS, NAME_LEN, PLAYED_SOURCES, as_played, broadcast_log, devices
from loa.control_plane.errors import InvalidError, NotFoundError
from loa.protocol.control import Played, State

__all__ = [
    "BroadcastStart",
    "DeviceOffline",
    "PlayedReport",
    "StateReport",
    "broadcast_ended",
    "broadcast_started",
    "from_message",
    "ms",
    "record",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


def _broadcast(tx: Tx, bid: int) -> Any:
    return tx.conn.execute(select(broadcast_log).where(broadcast_log.c.bid == bid)
                           .order_by(broadcast_log.c.id.desc()).limit(1)).one_or_none()


def _describe(tx: Tx, bid: int | None, src: str) -> dict[str, Any]:
    if bid is None:
        return {"bid": None, "src": src, "kind": src, "title": SOURCE_TITLES[src], "content_id": None,
                "alert_id": None, "cls": None, "lvl": None}
    known = _broadcast(tx, bid)
    if known is None:
        return {"bid": bid, "src": src, "kind": "scheduled" if src == "local" else "live",
                "title": f"broadcast {bid}", "content_id": None, "alert_id": None, "cls": None, "lvl": None}
    return {"bid": bid, "src": src, "kind": known.kind, "title": known.title or f"broadcast {bid}",
            "content_id": known.content_id, "alert_id": known.alert_id, "cls": known.cls, "lvl": known.lvl}


def _rank(cls: int | None, lvl: int | None) -> int | None:
    return None if cls is None or lvl is None else cls * 4 + lvl


def _why(tx: Tx, old: Any, new: dict[str, Any] | None, at: datetime) -> tuple[str, tuple[str, int | None] | None]:
    if old.bid is not None:
        known = _broadcast(tx, old.bid)
        if known is not None and known.ended_at is not None and known.ended_at <= at + _ENDED_SLACK:
            return "ended", None
    if new is None:
        return "ended", None
    if new["bid"] is None:
        return "interrupted", (new["title"], None)
    old_rank, new_rank = _rank(old.cls, old.lvl), _rank(new["cls"], new["lvl"])
    if old_rank is not None and new_rank is not None and new_rank <= old_rank:
        return "ended", None
    return "preempted", (new["title"], new["bid"])


def _open_row(tx: Tx, device_id: str) -> Any:
    return tx.conn.execute(select(as_played).where(as_played.c.device_id == device_id, as_played.c.ended_ms.is_(None))
                           .order_by(as_played.c.started_ms.desc(), as_played.c.id.desc()).limit(1)).one_or_none()


def record(tx: Tx, device_id: str, report: Report) -> None:
    """Fold one report of ``device_id`` into its as-played log (rules in the module docstring)."""
    zone_row = tx.conn.execute(select(devices.c.zone).where(devices.c.id == device_id).with_for_update()).one_or_none()
    if zone_row is None:
        raise NotFoundError(f"no device {device_id!r}")
    current = _open_row(tx, device_id)
    if isinstance(report, DeviceOffline):
        if current is not None:
            _close(tx, current.id, max(report.at or tx.now, current.started_at), "offline")
        return
    if isinstance(report, PlayedReport):
        if current is not None and current.bid == report.bid:
            return
        report = StateReport(report.bid, "ip", report.first_ns)
    if report.src != "idle" and report.src not in PLAYED_SOURCES:
        raise InvalidError(f"state.src must be one of {', '.join((*PLAYED_SOURCES, 'idle'))}")
    if report.bid is not None and not 0 <= report.bid <= 0xFFFF_FFFF:
        raise InvalidError("state.bid is a uint32")
    since = _time(report.since_ns, tx.now)
    if current is not None:
        if (current.bid, current.src) == (report.bid, report.src):
            return
        if since < current.started_at:
            return
    new = _describe(tx, report.bid, report.src) if report.src != "idle" else None
    if current is not None:
        reason, by = _why(tx, current, new, since)
        _close(tx, current.id, since, reason, by)
    if new is not None:
        tx.conn.execute(insert(as_played).values(device_id=device_id, zone=zone_row.zone, started_at=since,
                                                 started_ms=ms(since), **new))
