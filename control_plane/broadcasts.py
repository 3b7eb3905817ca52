"""Live broadcasts and relays: an operator's RTP/Opus input (a microphone sent by ffmpeg or a console), or a
stream URL (a provincial station), played to zones now; and the broadcast log everyone with reports can read.

A live broadcast has no library item to approve: starting one needs the ``broadcasts.live`` permission, target
zones inside the operator's scope, class ``normal`` or ``priority`` (an emergency goes through a signed alert),
and it is issued at the operator's level. Every start and stop is audited. Any running broadcast in one's scope
(live, relay or scheduled) can be stopped; an alert ends only by its signed cancel.

Failure semantics: :class:`InvalidError` (bad zone, class, URL), :class:`ForbiddenError` (a zone or broadcast
outside one's scope), :class:`ConflictError` (no streamer in this process; the broadcast is an alert or has
ended), :class:`NotFoundError`; nothing is started or recorded then. What the streamer refuses is reported as
:class:`InvalidError` with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, select

from loa.control_plane import audit, auth, zones
from loa.control_plane.alerts import issuing_level
from loa.control_plane.auth import Principal
from loa.control_plane.db import Database
from loa.control_plane.db.schema import broadcast_log
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from loa.control_plane.events import Event

__all__ = ["LIVE_CLASSES", "BroadcastRecord", "LiveBroadcaster", "get", "list_broadcasts", "start", "stop"]

LIVE_CLASSES = ("normal", "priority")
MAX_ZONES = 64
MAX_URL = 2048
STREAM_SCHEMES = ("http", "https", "rtsp", "rtp", "udp", "tcp", "hls")


class LiveBroadcaster(Protocol):
    """The streamer side (:class:`loa.control_plane.dataplane.DataPlane`). Calls come from worker threads."""

    def start_live(self, source: Any, zones: Sequence[str], *, cls: int, lvl: int, policy: str,
                   title: str) -> tuple[int, tuple[str, int] | None]: ...

    def stop_broadcast(self, bid: int) -> None: ...


@dataclass(frozen=True, slots=True)
class BroadcastRecord:
    id: int
    bid: int
    kind: str
    title: str
    zones: tuple[str, ...]
    cls: int
    lvl: int
    content_id: str | None
    alert_id: int | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None


def _record(row: Any) -> BroadcastRecord:
    return BroadcastRecord(row.id, row.bid, row.kind, row.title, tuple(row.zones), row.cls, row.lvl, row.content_id,
                           row.alert_id, row.started_at, row.ended_at, row.end_reason)


def _visible(conn: Connection, who: Principal, record: BroadcastRecord) -> bool:
    if who.scope is None:
        return True
    above = set(zones.ancestors(conn, who.scope))
    return any(code in above or auth.in_scope(conn, who, code) for code in record.zones)


def get(conn: Connection, who: Principal, bid: int) -> BroadcastRecord:
    """The latest log row of ``bid`` that ``who`` may see."""
    row = conn.execute(select(broadcast_log).where(broadcast_log.c.bid == bid)
                       .order_by(broadcast_log.c.id.desc()).limit(1)).one_or_none()
    if row is None:
        raise NotFoundError(f"no broadcast {bid}")
    record = _record(row)
    if not _visible(conn, who, record):
        raise ForbiddenError(f"broadcast {bid} is not in your scope")
    return record


def list_broadcasts(conn: Connection, who: Principal, *, active: bool | None = None, kind: str | None = None,
                    before: int | None = None, limit: int = 100) -> list[BroadcastRecord]:
    """Broadcasts newest first (``before``: a row id to page from), those ``who`` may see."""
    query = select(broadcast_log).order_by(broadcast_log.c.id.desc())
    if active is not None:
        query = query.where(broadcast_log.c.ended_at.is_(None) if active else broadcast_log.c.ended_at.is_not(None))
    if kind is not None:
        query = query.where(broadcast_log.c.kind == kind)
    if before is not None:
        query = query.where(broadcast_log.c.id < before)
    out: list[BroadcastRecord] = []
    offset = 0
    while len(out) < limit:
        rows = conn.execute(query.limit(limit * 2).offset(offset)).all()
        if not rows:
            break
        offset += len(rows)
        out.extend(r for r in map(_record, rows) if _visible(conn, who, r))
    return out[:limit]


def _check_source(port: int | None, url: str | None) -> None:
    if (port is None) == (url is None):
        raise InvalidError("give either port (a live RTP input) or url (a stream to relay)")
    if url is not None:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in STREAM_SCHEMES or len(url) > MAX_URL or any(c.isspace() for c in url):
            raise InvalidError(f"url must be a stream URL ({', '.join(STREAM_SCHEMES)}), at most {MAX_URL} "
                               "characters")


def start(db: Database, who: Principal, source_address: str | None, broadcaster: LiveBroadcaster | None, *,
          zone_codes: Sequence[str], title: str, cls: str, policy: str, port: int | None = None,
          url: str | None = None) -> tuple[BroadcastRecord, tuple[str, int] | None]:
    """Start a live broadcast (``port``: RTP input, 0 for any) or relay (``url``) to ``zone_codes``."""
    from loa.control_plane.dataplane import LiveSource

    if broadcaster is None:
        raise ConflictError("no streamer is attached to this control plane (loa serve runs one)")
    if cls not in LIVE_CLASSES:
        raise InvalidError(f"a live broadcast is of class {' or '.join(LIVE_CLASSES)}; an emergency is an alert")
    if policy not in ("resume", "drop"):
        raise InvalidError("policy must be resume or drop")
    _check_source(port, url)
    targets = tuple(dict.fromkeys(zone_codes))
    if not 1 <= len(targets) <= MAX_ZONES:
        raise InvalidError(f"give 1-{MAX_ZONES} target zones")
    with db.read() as conn:
        for code in targets:
            zones.get(conn, code)
            auth.require_zone(conn, who, code)
        lvl = issuing_level(conn, who.scope)
    try:
        bid, listen = broadcaster.start_live(LiveSource(port=port, url=url), targets, cls=LIVE_CLASSES.index(cls),
                                             lvl=lvl, policy=policy, title=title)
    except (ValueError, OSError) as exc:
        raise InvalidError(f"the streamer refused the broadcast: {exc}") from None
    with db.write() as tx:
        record = get(tx.conn, who, bid)
        audit.record(tx, actor=who.username, source=source_address, action="broadcast.start", target=str(bid),
                     details={"kind": record.kind, "zones": list(targets), "class": cls, "policy": policy,
                              "title": title, **({"url": url} if url else {"port": listen[1] if listen else None})})
        _publish(tx, record, "started", who.username)
    return record, listen


def stop(db: Database, who: Principal, source_address: str | None, broadcaster: LiveBroadcaster | None,
         bid: int) -> BroadcastRecord:
    """Stop a running broadcast in ``who``'s scope now."""
    if broadcaster is None:
        raise ConflictError("no streamer is attached to this control plane (loa serve runs one)")
    with db.read() as conn:
        record = get(conn, who, bid)
        for code in record.zones:
            auth.require_zone(conn, who, code)
    if record.kind == "alert":
        raise ConflictError(f"broadcast {bid} is an alert: cancel it (POST /api/v1/alerts/{record.alert_id}/cancel)")
    if record.ended_at is not None:
        raise ConflictError(f"broadcast {bid} already ended ({record.end_reason})")
    try:
        broadcaster.stop_broadcast(bid)
    except KeyError:
        raise ConflictError(f"broadcast {bid} is no longer running") from None
    with db.write() as tx:
        audit.record(tx, actor=who.username, source=source_address, action="broadcast.stop", target=str(bid),
                     details={"kind": record.kind, "zones": list(record.zones)})
        _publish(tx, record, "stopped", who.username)
    return record


def _publish(tx: Any, record: BroadcastRecord, action: str, by: str) -> None:
    paths = [zones.ancestors(tx.conn, code) for code in record.zones]
    common: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    tx.emit(Event("broadcast", {"bid": record.bid, "kind": record.kind, "title": record.title,
                                "zones": list(record.zones), "action": action, "by": by},
                  permission="broadcasts.read", zones=tuple(common) or None))
