"""Zones: the administrative tree (province > district > commune > hamlet, any depth up to eight levels).

Subtree and ancestor queries are recursive SQL (the same on SQLite and PostgreSQL), bounded by
:data:`MAX_DEPTH`: a device is given its zone path root first and that path holds at most eight codes
(PROTOCOL.md section 4.6, ``config.zones``). Zone codes are 1-64 ASCII letters, digits, ``.``, ``_`` or ``-``
(Vietnam's administrative codes are digits; hamlets get suffixes such as ``26734-03``); names are any text,
stored in Unicode NFC so that the same Vietnamese name typed two ways is one name.

Failure semantics: every function that writes validates first and raises :class:`InvalidError`, :class:`NotFoundError`
or :class:`ConflictError` with nothing written; it writes its audit entry in the caller's transaction.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Select, and_, func, insert, literal, or_, select
from sqlalchemy import update as sql_update

from loa.control_plane import audit
from loa.control_plane.auth import Actor
from loa.control_plane.db import Tx
from loa.control_plane.db.schema import (
    CODE_LEN,
    NAME_LEN,
    alert_zones,
    alerts,
    devices,
    enrolment_tokens,
    library_items,
    schedule_targets,
    users,
    zones,
)
from loa.control_plane.errors import ConflictError, InvalidError, NotFoundError

__all__ = [
    "MAX_DEPTH",
    "ROOT",
    "ZoneRecord",
    "ancestors",
    "apply_rows",
    "check_code",
    "check_level",
    "check_name",
    "create",
    "delete",
    "get",
    "list_zones",
    "references",
    "subtree",
    "subtree_codes",
    "update",
]

MAX_DEPTH = 8
LEVEL_LEN = 32
CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _Root:
    def __repr__(self) -> str:
        return "ROOT"


ROOT: Final = _Root()  # "no parent" where None means "unchanged" or "any"


@dataclass(frozen=True, slots=True)
class ZoneRecord:
    code: str
    name: str
    parent: str | None
    level: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "parent": self.parent, "level": self.level}


def check_code(code: str, what: str = "zone code") -> str:
    if not isinstance(code, str) or not 1 <= len(code) <= CODE_LEN or not CODE_RE.fullmatch(code):
        raise InvalidError(f"{what} {code!r} must be 1-{CODE_LEN} letters, digits, '.', '_' or '-', "
                      "starting with a letter or digit")
    return code


def check_name(name: str) -> str:
    name = unicodedata.normalize("NFC", name).strip()
    if not 1 <= len(name) <= NAME_LEN or _CONTROL.search(name):
        raise InvalidError(f"zone name must be 1-{NAME_LEN} characters without control characters")
    return name


def check_level(level: str | None) -> str | None:
    if level is None:
        return None
    level = unicodedata.normalize("NFC", level).strip()
    if not level:
        return None
    if len(level) > LEVEL_LEN or _CONTROL.search(level):
        raise InvalidError(f"zone level must be at most {LEVEL_LEN} characters without control characters")
    return level


def _record(row: Any) -> ZoneRecord:
    return ZoneRecord(row.code, row.name, row.parent, row.level, row.created_at)


def get(conn: Connection, code: str) -> ZoneRecord:
    row = conn.execute(select(zones).where(zones.c.code == code)).one_or_none()
    if row is None:
        raise NotFoundError(f"no zone {code!r}")
    return _record(row)


def ancestors(conn: Connection, code: str) -> tuple[str, ...]:
    """The zone path of ``code``, root first, ending with ``code``; raises :class:`NotFoundError`."""
    path = ancestors_many(conn, [code]).get(code)
    if path is None:
        raise NotFoundError(f"no zone {code!r}")
    return path


def ancestors_many(conn: Connection, codes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """:func:`ancestors` of each of ``codes`` in one query; a code that is no zone is left out of the result."""
    result: dict[str, tuple[str, ...]] = {}
    wanted = sorted(set(codes))
    for first in range(0, len(wanted), _ANCESTORS_CHUNK):
        chunk = wanted[first:first + _ANCESTORS_CHUNK]
        start = select(zones.c.code.label("start"), zones.c.code, zones.c.parent,
                       literal(0).label("depth")).where(zones.c.code.in_(chunk))
        up = start.cte("up_many", recursive=True)
        parent = zones.alias("p")
        up = up.union_all(
            select(up.c.start, parent.c.code, parent.c.parent, up.c.depth + 1)
            .where(and_(parent.c.code == up.c.parent, up.c.depth < MAX_DEPTH + 1)))
        paths: dict[str, list[str]] = {}
        for row in conn.execute(select(up.c.start, up.c.code).order_by(up.c.start, up.c.depth.desc())):
            paths.setdefault(row.start, []).append(row.code)
        result.update((code, tuple(path)) for code, path in paths.items())
    return result


_ANCESTORS_CHUNK = 500  # codes per query of ancestors_many (SQLite's bound parameters)


def subtree_codes(code: str) -> Select[tuple[str]]:
    """A SELECT of ``code`` and every zone code below it (for ``IN (...)`` filters). Its CTE is nested inside
    it, so that one query may hold several (a scope and a ``zone`` filter) without their names clashing."""
    start = select(zones.c.code, literal(0).label("depth")).where(zones.c.code == code)
    down = start.cte("down", recursive=True, nesting=True)
    child = zones.alias("c")
    down = down.union_all(
        select(child.c.code, down.c.depth + 1)
        .where(and_(child.c.parent == down.c.code, down.c.depth < MAX_DEPTH + 1)))
    return select(down.c.code)


def _height(conn: Connection, code: str) -> int:
    """Levels below ``code`` (0 for a leaf)."""
    start = select(zones.c.code, literal(0).label("depth")).where(zones.c.code == code)
    down = start.cte("h", recursive=True)
    child = zones.alias("c")
    down = down.union_all(
        select(child.c.code, down.c.depth + 1)
        .where(and_(child.c.parent == down.c.code, down.c.depth < MAX_DEPTH + 1)))
    return int(conn.execute(select(func.max(down.c.depth))).scalar_one() or 0)


def subtree(conn: Connection, code: str, *, offset: int = 0, limit: int = 1000) -> list[tuple[int, ZoneRecord]]:
    """``code`` and the zones below it as ``(depth, zone)``, shallowest first, then by code."""
    get(conn, code)
    start = select(zones.c.code, literal(0).label("depth")).where(zones.c.code == code)
    down = start.cte("down", recursive=True)
    child = zones.alias("c")
    down = down.union_all(
        select(child.c.code, down.c.depth + 1)
        .where(and_(child.c.parent == down.c.code, down.c.depth < MAX_DEPTH + 1)))
    query = (select(down.c.depth, zones).join(zones, zones.c.code == down.c.code)
             .order_by(down.c.depth, zones.c.code).offset(offset).limit(limit))
    return [(row.depth, _record(row)) for row in conn.execute(query)]


def list_zones(conn: Connection, *, within: str | None = None, parent: str | _Root | None = None,
               level: str | None = None, q: str | None = None, after: str | None = None,
               limit: int = 100) -> list[ZoneRecord]:
    """Zones ordered by code, optionally only within a subtree, under one parent (``ROOT``: roots), of a level,
    or whose code or name contains ``q``; keyset-paginated by ``after`` (the last code seen)."""
    query = select(zones).order_by(zones.c.code).limit(limit)
    if within is not None:
        query = query.where(zones.c.code.in_(subtree_codes(within)))
    if parent is ROOT:
        query = query.where(zones.c.parent.is_(None))
    elif isinstance(parent, str):
        query = query.where(zones.c.parent == parent)
    if level is not None:
        query = query.where(zones.c.level == level)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(zones.c.code.like(pattern, escape="\\"), zones.c.name.like(pattern, escape="\\")))
    if after is not None:
        query = query.where(zones.c.code > after)
    return [_record(r) for r in conn.execute(query)]


def _check_depth(conn: Connection, parent: str | None, moving: str | None = None) -> None:
    depth = len(ancestors(conn, parent)) if parent is not None else 0
    below = _height(conn, moving) if moving is not None else 0
    if depth + 1 + below > MAX_DEPTH:
        raise InvalidError(f"the tree would be {depth + 1 + below} levels deep; at most {MAX_DEPTH} "
                      "(a device's zone path holds at most 8 zones)")


def create(tx: Tx, actor: Actor, *, code: str, name: str, parent: str | None = None,
           level: str | None = None) -> ZoneRecord:
    code, name, level = check_code(code), check_name(name), check_level(level)
    if parent is not None:
        check_code(parent, "parent code")
    if tx.conn.execute(select(zones.c.code).where(zones.c.code == code)).first() is not None:
        raise ConflictError(f"zone {code!r} already exists")
    if parent is not None:
        get(tx.conn, parent)
        _check_depth(tx.conn, parent)
    tx.conn.execute(insert(zones).values(code=code, name=name, parent=parent, level=level, created_at=tx.now))
    record = ZoneRecord(code, name, parent, level, tx.now)
    audit.record(tx, actor=actor.name, source=actor.source, action="zone.create", target=code,
                 details=record.as_dict())
    return record


def update(tx: Tx, actor: Actor, code: str, *, name: str | None = None, level: str | None = None,
           parent: str | _Root | None = None) -> ZoneRecord:
    """Rename, relevel or move a zone (``parent=ROOT`` makes it a root); ``None`` leaves a field as it is."""
    current = get(tx.conn, code)
    changes: dict[str, Any] = {}
    if name is not None and check_name(name) != current.name:
        changes["name"] = check_name(name)
    if level is not None and check_level(level) != current.level:
        changes["level"] = check_level(level)
    if parent is not None:
        new_parent = None if parent is ROOT else check_code(str(parent), "parent code")
        if new_parent != current.parent:
            if new_parent is not None:
                get(tx.conn, new_parent)
                if code in ancestors(tx.conn, new_parent):
                    raise InvalidError(f"cannot move zone {code!r} under {new_parent!r}, which lies inside it")
            _check_depth(tx.conn, new_parent, moving=code)
            changes["parent"] = new_parent
    if not changes:
        return current
    tx.conn.execute(sql_update(zones).where(zones.c.code == code).values(**changes))
    audit.record(tx, actor=actor.name, source=actor.source, action="zone.update", target=code,
                 details={"before": {k: getattr(current, k) for k in changes}, "after": changes})
    return get(tx.conn, code)


def _count(conn: Connection, column: Any, code: str) -> int:
    return int(conn.execute(select(func.count()).where(column == code)).scalar_one())


# Alerts in these states still act on their zones; cancelled and expired ones are records that outlive a zone.
OPEN_ALERT_STATES = ("draft", "pending_approval", "approved", "failed")


def references(conn: Connection, code: str, now: datetime) -> dict[str, int]:
    """What still refers to zone ``code``, counted per kind (every kind, zeros included): child zones, devices,
    users (scope), enrolment tokens, library items (owner zone), schedule entries (a target) and open alerts (a
    target of a draft, pending, approved, failed or unexpired active alert)."""
    open_alerts = (select(func.count(func.distinct(alert_zones.c.alert_id)))
                   .select_from(alert_zones.join(alerts, alerts.c.id == alert_zones.c.alert_id))
                   .where(alert_zones.c.zone == code,
                          or_(alerts.c.state.in_(OPEN_ALERT_STATES),
                              and_(alerts.c.state == "active", alerts.c.expires_at > now))))
    return {
        "child zones": _count(conn, zones.c.parent, code),
        "devices": _count(conn, devices.c.zone, code),
        "users": _count(conn, users.c.scope, code),
        "enrolment tokens": _count(conn, enrolment_tokens.c.zone, code),
        "library items": _count(conn, library_items.c.zone, code),
        "schedule entries": _count(conn, schedule_targets.c.zone, code),
        "alerts": int(conn.execute(open_alerts).scalar_one()),
    }


def delete(tx: Tx, actor: Actor, code: str) -> None:
    """Delete a zone nothing refers to (:func:`references`). Otherwise :class:`ConflictError` whose detail names
    each kind with its count, also given as ``used_by`` (kind -> count, only kinds with a count)."""
    current = get(tx.conn, code)
    uses = {what: n for what, n in references(tx.conn, code, tx.now).items() if n}
    if uses:
        listed = ", ".join(f"{n} {_singular(what) if n == 1 else what}" for what, n in uses.items())
        hint = " (cancel or finish the alerts)" if "alerts" in uses else ""
        raise ConflictError(f"zone {code!r} is still referred to by {listed}: move or remove them first{hint}",
                            extra={"used_by": uses})
    tx.conn.execute(zones.delete().where(zones.c.code == code))
    audit.record(tx, actor=actor.name, source=actor.source, action="zone.delete", target=code,
                 details=current.as_dict())


def _singular(kind: str) -> str:
    return {"child zones": "child zone", "devices": "device", "users": "user", "enrolment tokens": "enrolment token",
            "library items": "library item", "schedule entries": "schedule entry", "alerts": "alert"}[kind]


def apply_rows(tx: Tx, rows: Sequence[ZoneRecord], existing: dict[str, Any]) -> tuple[int, int, int]:
    """Insert new zones (``rows`` in parent-first order) and update changed ones; returns counts."""
    new = [r for r in rows if r.code not in existing]
    changed = [r for r in rows if r.code in existing and existing[r.code] != (r.name, r.parent, r.level)]
    if new:
        tx.conn.execute(insert(zones), [{"code": r.code, "name": r.name, "parent": r.parent, "level": r.level,
                                         "created_at": tx.now} for r in new])
    for r in changed:
        tx.conn.execute(sql_update(zones).where(zones.c.code == r.code)
                        .values(name=r.name, parent=r.parent, level=r.level))
    return len(new), len(changed), len(rows) - len(new) - len(changed)
