"""The library: audio items, e-board items (text, images) and playlists, each with its approval state.

Every item has a title, an issuing level (commune < district < province < national, as on the wire), a class
(normal < priority < emergency), an owner zone (``None``: national) and an author. Its content lives in the
content store (:mod:`loa.control_plane.content`) and is described by a ``library_content`` row shared by every
item with the same bytes. A playlist is an item too: an ordered list of audio items, approved like any other.

Who sees what: an item is visible to users whose scope covers its zone and to users *below* it (what a province
issues, its communes may schedule); national items to everyone. Changing an item needs its zone in your scope.
The approval workflow (:mod:`loa.control_plane.approval`) decides which items may be broadcast; editing an item
returns it to draft.

Failure semantics: every function validates first and raises :class:`InvalidError`, :class:`NotFoundError`,
:class:`ConflictError` or :class:`ForbiddenError` with nothing written; every change writes its audit entry
and queues a ``library.item`` event in the caller's transaction.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, delete, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from loa.control_plane import audit, zones
from loa.control_plane.auth import Actor, Principal
from loa.control_plane.content import ContentStore
from loa.control_plane.db import Tx
from loa.control_plane.db.schema import (
    ITEM_KINDS,
    NAME_LEN,
    library_content,
    library_items,
    playlist_members,
    schedule_entries,
)
from loa.control_plane.db.schema import zones as zones_table
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from loa.control_plane.events import Event
from loa.control_plane.levels import LEVEL_NAMES
from loa.control_plane.media import StoredContent, check_text, store_text

__all__ = [
    "AUDIO_KINDS",
    "BOARD_KINDS",
    "CLASSES",
    "LEVELS",
    "MAX_MEMBERS",
    "ContentInfo",
    "ItemRecord",
    "check_title",
    "class_of",
    "create",
    "delete_item",
    "edit",
    "emit_change",
    "get",
    "get_many",
    "level_of",
    "list_items",
    "require_visible",
    "subtrees",
    "users_of",
    "visible",
]

CLASSES: Final = ("normal", "priority", "emergency")  # by wire value
LEVELS: Final = LEVEL_NAMES                              # commune, district, province, national
AUDIO_KINDS: Final = frozenset({"audio", "playlist"})    # played by speakers
BOARD_KINDS: Final = frozenset({"text", "image"})        # shown on boards
MAX_MEMBERS: Final = 200


@dataclass(frozen=True, slots=True)
class ContentInfo:
    sha256: str
    media_type: str
    size_bytes: int
    duration_ms: int | None
    loudness_lufs: float | None
    gain_db: float | None
    width: int | None
    height: int | None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """An item as stored; ``duration_ms`` is its audio's (a playlist's: the sum of its members'), else None."""

    id: int
    kind: str
    title: str
    cls: int
    lvl: int
    zone: str | None
    author: str
    state: str
    version: int
    content: ContentInfo | None
    text: str | None
    original_name: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    members: tuple[int, ...]
    duration_ms: int | None

    @property
    def class_name(self) -> str:
        return CLASSES[self.cls]

    @property
    def level_name(self) -> str:
        return LEVELS[self.lvl]

    @property
    def medium(self) -> str:
        """``audio`` (speakers) or ``board`` (e-boards)."""
        return "audio" if self.kind in AUDIO_KINDS else "board"


def check_title(title: str) -> str:
    title = unicodedata.normalize("NFC", title).strip()
    if not 1 <= len(title) <= NAME_LEN or any(unicodedata.category(c) in {"Cc", "Cs", "Cn"} for c in title):
        raise InvalidError(f"a title is 1-{NAME_LEN} characters without control characters")
    return title


def class_of(name: str) -> int:
    if name not in CLASSES:
        raise InvalidError(f"class must be one of {', '.join(CLASSES)}")
    return CLASSES.index(name)


def level_of(name: str) -> int:
    if name not in LEVELS:
        raise InvalidError(f"level must be one of {', '.join(LEVELS)}")
    return LEVELS.index(name)


def _centi(value: float | None) -> int | None:
    return None if value is None else round(value * 100)


def _uncenti(value: int | None) -> float | None:
    return None if value is None else value / 100


_ITEM_COLUMNS = [*library_items.c, *(c.label(f"c_{c.name}") for c in library_content.c)]


def _records(conn: Connection, rows: Sequence[Any]) -> list[ItemRecord]:
    playlists = [r.id for r in rows if r.kind == "playlist"]
    members: dict[int, list[int]] = {p: [] for p in playlists}
    durations: dict[int, int | None] = {}
    if playlists:
        query = (select(playlist_members.c.playlist_id, playlist_members.c.item_id, library_content.c.duration_ms)
                 .join(library_items, library_items.c.id == playlist_members.c.item_id)
                 .outerjoin(library_content, library_content.c.sha256 == library_items.c.content)
                 .where(playlist_members.c.playlist_id.in_(playlists))
                 .order_by(playlist_members.c.playlist_id, playlist_members.c.position))
        totals: dict[int, int] = dict.fromkeys(playlists, 0)
        for m in conn.execute(query):
            members[m.playlist_id].append(m.item_id)
            totals[m.playlist_id] += m.duration_ms or 0
        durations = {p: (totals[p] if members[p] else None) for p in playlists}
    out = []
    for r in rows:
        content = None if r.c_sha256 is None else ContentInfo(
            r.c_sha256, r.c_media_type, r.c_size_bytes, r.c_duration_ms, _uncenti(r.c_loudness_centi_lufs),
            _uncenti(r.c_gain_centi_db), r.c_width, r.c_height)
        duration = durations.get(r.id) if r.kind == "playlist" else (content.duration_ms if content else None)
        out.append(ItemRecord(r.id, r.kind, r.title, r.cls, r.lvl, r.zone, r.author, r.state, r.version, content,
                              r.text, r.original_name, r.reviewed_by, r.reviewed_at, r.reason, r.created_at,
                              r.updated_at, tuple(members.get(r.id, ())), duration))
    return out


def _select() -> Any:
    return select(*_ITEM_COLUMNS).outerjoin(library_content, library_content.c.sha256 == library_items.c.content)


def get(conn: Connection, item_id: int, *, for_update: bool = False) -> ItemRecord:
    query = _select().where(library_items.c.id == item_id)
    if for_update:  # PostgreSQL: serialise changes to one item (SQLite's writers are serialised already)
        query = query.with_for_update(of=library_items)
    rows = conn.execute(query).all()
    if not rows:
        raise NotFoundError(f"no library item {item_id}")
    return _records(conn, rows)[0]


def get_many(conn: Connection, ids: Iterable[int]) -> dict[int, ItemRecord]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(_select().where(library_items.c.id.in_(wanted))).all()
    return {r.id: r for r in _records(conn, rows)}


def visible(conn: Connection, principal: Principal, zone: str | None) -> bool:
    """True if an item of ``zone`` is visible to ``principal``: in their scope's subtree, or above their scope."""
    if principal.scope is None or zone is None:
        return True
    return principal.scope in zones.ancestors(conn, zone) or zone in zones.ancestors(conn, principal.scope)


def require_visible(conn: Connection, principal: Principal, item: ItemRecord) -> None:
    if not visible(conn, principal, item.zone):
        raise ForbiddenError(f"library item {item.id} (zone {item.zone}) is outside your scope ({principal.scope})")


def list_items(conn: Connection, *, visible_to: str | None = None, kind: str | None = None,
               state: str | None = None, cls: int | None = None, lvl: int | None = None, zone: str | None = None,
               author: str | None = None, q: str | None = None, after: int | None = None,
               limit: int = 100) -> list[ItemRecord]:
    """Items newest first (by id, descending). ``visible_to``: a scope zone, keeping items visible from it;
    ``zone``: items owned inside that zone's subtree; ``after``: only items older than that id."""
    query = _select().order_by(library_items.c.id.desc()).limit(limit)
    if visible_to is not None:
        above = zones.ancestors(conn, visible_to)
        query = query.where(or_(library_items.c.zone.is_(None), library_items.c.zone.in_(above),
                                library_items.c.zone.in_(subtrees([visible_to], "visible_down"))))
    if zone is not None:
        query = query.where(library_items.c.zone.in_(subtrees([zone], "filter_down")))
    for column, value in ((library_items.c.kind, kind), (library_items.c.state, state), (library_items.c.cls, cls),
                          (library_items.c.lvl, lvl), (library_items.c.author, author)):
        if value is not None:
            query = query.where(column == value)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(library_items.c.title.like(pattern, escape="\\"),
                                library_items.c.text.like(pattern, escape="\\")))
    if after is not None:
        query = query.where(library_items.c.id < after)
    return _records(conn, conn.execute(query).all())


def _store_content(tx: Tx, stored: StoredContent) -> None:
    values = {"sha256": stored.sha256, "media_type": stored.media_type, "size_bytes": stored.size_bytes,
              "duration_ms": stored.duration_ms, "loudness_centi_lufs": _centi(stored.loudness_lufs),
              "gain_centi_db": _centi(stored.gain_db), "width": stored.width, "height": stored.height,
              "created_at": tx.now}
    dialect = postgresql if tx.conn.dialect.name == "postgresql" else sqlite
    tx.conn.execute(dialect.insert(library_content).values(**values).on_conflict_do_nothing())


def subtrees(codes: Sequence[str], name: str) -> Any:
    """A SELECT of ``codes`` and every zone below them, as a recursive CTE called ``name`` (queries that need
    several subtrees give each its own name)."""
    start = select(zones_table.c.code, literal(0).label("depth")).where(zones_table.c.code.in_(list(codes)))
    down = start.cte(name, recursive=True)
    child = zones_table.alias(f"{name}_child")
    down = down.union_all(select(child.c.code, down.c.depth + 1)
                          .where(child.c.parent == down.c.code, down.c.depth < zones.MAX_DEPTH + 1))
    return select(down.c.code)


def _check_members(conn: Connection, members: Sequence[int]) -> list[int]:
    members = list(members)
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise InvalidError(f"a playlist holds 1-{MAX_MEMBERS} items")
    found = get_many(conn, members)
    missing = [m for m in members if m not in found]
    if missing:
        raise NotFoundError(f"no library item {missing[0]}")
    wrong = [m for m in members if found[m].kind != "audio"]
    if wrong:
        raise InvalidError(f"a playlist holds audio items only; item {wrong[0]} is {found[wrong[0]].kind}")
    return members


def _path(conn: Connection, zone: str | None) -> tuple[str, ...] | None:
    return zones.ancestors(conn, zone) if zone is not None else None


def emit_change(tx: Tx, item: ItemRecord, change: str, by: str, **extra: Any) -> None:
    tx.emit(Event("library.item", {"item": item.id, "kind": item.kind, "title": item.title, "state": item.state,
                                   "zone": item.zone, "version": item.version, "change": change, "by": by, **extra},
                  permission="library.read", zones=_path(tx.conn, item.zone)))


def _check_range(cls: int | None, lvl: int | None) -> None:
    if cls is not None and not 0 <= cls < len(CLASSES):
        raise InvalidError(f"class must be one of {', '.join(CLASSES)}")
    if lvl is not None and not 0 <= lvl < len(LEVELS):
        raise InvalidError(f"level must be one of {', '.join(LEVELS)}")


def create(tx: Tx, actor: Actor, *, kind: str, title: str, cls: int, lvl: int, zone: str | None,
           content: StoredContent | None = None, text: str | None = None, store: ContentStore | None = None,
           original_name: str = "", members: Sequence[int] = ()) -> ItemRecord:
    """A new item in draft. Audio and images need ``content`` (already in the store); text needs ``text`` and the
    ``store`` to write it to; a playlist needs ``members`` (audio items)."""
    title = check_title(title)
    _check_range(cls, lvl)
    if kind not in ITEM_KINDS:
        raise InvalidError(f"kind must be one of {', '.join(ITEM_KINDS)}")
    if zone is not None:
        zones.get(tx.conn, zone)
    if kind == "playlist":
        members = _check_members(tx.conn, members)
    elif kind == "text":
        if store is None:
            raise ValueError("text items need the content store")
        text = check_text(text or "")
        content = store_text(store, text)
    if (content is None) != (kind == "playlist"):
        raise InvalidError(f"a {kind} item {'has no' if kind == 'playlist' else 'needs'} content")
    if content is not None:
        _store_content(tx, content)
    result = tx.conn.execute(insert(library_items).values(
        kind=kind, title=title, cls=cls, lvl=lvl, zone=zone, author=actor.name, state="draft", version=1,
        content=content.sha256 if content else None, text=text if kind == "text" else None,
        original_name=original_name[:255], created_at=tx.now, updated_at=tx.now))
    assert result.inserted_primary_key is not None
    item_id = int(result.inserted_primary_key[0])
    if kind == "playlist":
        tx.conn.execute(insert(playlist_members), [{"playlist_id": item_id, "position": i, "item_id": m}
                                                   for i, m in enumerate(members)])
    item = get(tx.conn, item_id)
    details: dict[str, Any] = {"kind": kind, "title": item.title, "class": item.class_name,
                               "level": item.level_name, "zone": zone}
    if content is not None:
        details.update(content=content.sha256, media_type=content.media_type, size_bytes=content.size_bytes,
                       duration_ms=content.duration_ms, original_name=item.original_name)
    if members:
        details["members"] = list(members)
    audit.record(tx, actor=actor.name, source=actor.source, action="library.create", target=f"item:{item_id}",
                 details=details)
    emit_change(tx, item, "create", actor.name)
    return item


def _shown(item: ItemRecord) -> dict[str, Any]:
    """The editable fields of an item as the audit log shows them (text by its content id: it may be long)."""
    return {"title": item.title, "class": item.class_name, "level": item.level_name, "zone": item.zone,
            "content": item.content.sha256 if item.content else None, "members": list(item.members)}


def edit(tx: Tx, actor: Actor, item_id: int, *, title: str | None = None, cls: int | None = None,
         lvl: int | None = None, zone: str | None = None, move: bool = False, text: str | None = None,
         store: ContentStore | None = None, members: Sequence[int] | None = None) -> ItemRecord:
    """Change an item; ``move=True`` sets its zone to ``zone`` (None: national); new ``text`` (text items) is
    written to ``store``. Any change returns an approved, submitted or rejected item to draft (it must be
    approved again) and bumps its version; no change, no write."""
    from loa.control_plane.approval import next_state  # approval builds on this module

    before = get(tx.conn, item_id, for_update=True)
    _check_range(cls, lvl)
    values: dict[str, Any] = {}
    if title is not None and check_title(title) != before.title:
        values["title"] = check_title(title)
    if cls is not None and cls != before.cls:
        values["cls"] = cls
    if lvl is not None and lvl != before.lvl:
        values["lvl"] = lvl
    if move and zone != before.zone:
        if zone is not None:
            zones.get(tx.conn, zone)
        values["zone"] = zone
    if text is not None:
        if before.kind != "text":
            raise InvalidError(f"item {item_id} is {before.kind}: only text items have text")
        if store is None:
            raise ValueError("changing text needs the content store")
        text = check_text(text)
        if text != before.text:
            content = store_text(store, text)
            _store_content(tx, content)
            values.update(text=text, content=content.sha256)
    new_members = None
    if members is not None:
        if before.kind != "playlist":
            raise InvalidError(f"item {item_id} is {before.kind}: only playlists have members")
        if item_id in members:
            raise InvalidError("a playlist cannot hold itself")
        checked = _check_members(tx.conn, members)
        new_members = checked if checked != list(before.members) else None
    if not values and new_members is None:
        return before
    state = next_state(before.state, "edit")
    values.update(state=state, version=before.version + 1, updated_at=tx.now)
    if state != before.state:
        values.update(reviewed_by=None, reviewed_at=None, reason=None)
    tx.conn.execute(update(library_items).where(library_items.c.id == item_id).values(**values))
    if new_members is not None:
        tx.conn.execute(delete(playlist_members).where(playlist_members.c.playlist_id == item_id))
        tx.conn.execute(insert(playlist_members), [{"playlist_id": item_id, "position": i, "item_id": m}
                                                   for i, m in enumerate(new_members)])
    after = get(tx.conn, item_id)
    old, new = _shown(before), _shown(after)
    changed = [k for k in old if old[k] != new[k]]
    audit.record(tx, actor=actor.name, source=actor.source, action="library.edit", target=f"item:{item_id}",
                 details={"before": {k: old[k] for k in changed}, "after": {k: new[k] for k in changed},
                          "version": after.version, "state": {"before": before.state, "after": after.state}})
    emit_change(tx, after, "edit", actor.name, previous_state=before.state)
    return after


def users_of(conn: Connection, item_id: int) -> Mapping[str, list[int]]:
    """What refers to an item: schedule entries and playlists, by id."""
    entries = [r.id for r in conn.execute(select(schedule_entries.c.id).where(schedule_entries.c.item_id == item_id)
                                          .order_by(schedule_entries.c.id))]
    playlists = [r.playlist_id for r in conn.execute(
        select(playlist_members.c.playlist_id).where(playlist_members.c.item_id == item_id).distinct()
        .order_by(playlist_members.c.playlist_id))]
    return {"schedule entries": entries, "playlists": playlists}


def delete_item(tx: Tx, actor: Actor, item_id: int) -> None:
    """Delete an item no schedule entry or playlist refers to. Its content file stays (others may share it)."""
    item = get(tx.conn, item_id, for_update=True)
    uses = {what: ids for what, ids in users_of(tx.conn, item_id).items() if ids}
    if uses:
        listed = "; ".join(f"{what} {', '.join(map(str, ids[:10]))}" for what, ids in uses.items())
        raise ConflictError(f"library item {item_id} is still used by {listed}: remove those first",
                            extra={"used_by": uses})
    tx.conn.execute(delete(library_items).where(library_items.c.id == item_id))
    audit.record(tx, actor=actor.name, source=actor.source, action="library.delete", target=f"item:{item_id}",
                 details={"kind": item.kind, "title": item.title, "state": item.state, "zone": item.zone,
                          "content": item.content.sha256 if item.content else None})
    emit_change(tx, item, "delete", actor.name)
