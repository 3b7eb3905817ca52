"""The approval workflow of library items, as a table: draft -> submitted -> approved | rejected.

:data:`TRANSITIONS` maps ``state -> event -> next state``; an event missing from a state's row is refused with
:class:`WorkflowError` (409). Besides the table:

- ``approve`` and ``reject`` are *reviews*: never by the item's author (:class:`ForbiddenError`, 403). The API
  also requires the ``library.approve`` permission (approvers, NOC operators, admins) and the item's zone in the
  reviewer's scope.
- ``reject`` needs a reason, kept on the item until it changes.
- ``edit`` (any change to the item, made through :func:`loa.control_plane.library.edit`) returns it to draft,
  so what is broadcast is always exactly what was approved.
- a playlist may be submitted or approved only while every member is approved.

Nothing is broadcast or scheduled unless :func:`broadcast_parts` accepts it: the item approved, and for a
playlist every member too (:class:`NotApprovedError`, 409, otherwise). The scheduler checks it again at every
slot, so an item edited after it was scheduled is not played until it is approved again.

Failure semantics: refusals raise before anything is written; each transition writes its audit entry
(``library.submit``, ``library.approve``, ``library.reject``) and queues a ``library.item`` event in the
caller's transaction.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, update

from loa.control_plane import audit, library
from loa.control_plane.auth import Actor
from loa.control_plane.db import Tx
from loa.control_plane.db.schema import ITEM_STATES, library_items
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError
from loa.control_plane.library import ItemRecord

__all__ = [
    "EVENTS",
    "MAX_REASON",
    "REVIEWS",
    "STATES",
    "TRANSITIONS",
    "NotApprovedError",
    "Part",
    "WorkflowError",
    "broadcast_parts",
    "next_state",
    "transition",
]

STATES: Final = ITEM_STATES
EVENTS: Final = ("submit", "approve", "reject", "edit")
TRANSITIONS: Final[Mapping[str, Mapping[str, str]]] = {
    "draft": {"submit": "submitted", "edit": "draft"},
    "submitted": {"approve": "approved", "reject": "rejected", "edit": "draft"},
    "approved": {"edit": "draft"},
    "rejected": {"submit": "submitted", "edit": "draft"},
}
REVIEWS: Final = frozenset({"approve", "reject"})
MAX_REASON: Final = 1000
_DONE = {"submit": "submitted", "approve": "approved", "reject": "rejected", "edit": "edited"}
assert set(TRANSITIONS) == set(STATES)
assert all(set(row) <= set(EVENTS) and set(row.values()) <= set(STATES) for row in TRANSITIONS.values())


class WorkflowError(ConflictError):
    """The event is not allowed in the item's current state."""

    kind, title = "workflow", "Not allowed in this state"


class NotApprovedError(ConflictError):
    """An item (or a playlist member) that is not approved was to be broadcast or scheduled."""

    kind, title = "not-approved", "Not approved"


@dataclass(frozen=True, slots=True)
class Part:
    """One file of a broadcast: an item's content, starting ``offset_ms`` after the slot (playlists play their
    members one after another)."""

    item_id: int
    sha256: str
    media_type: str
    duration_ms: int | None
    offset_ms: int


def next_state(state: str, event: str) -> str:
    """The state after ``event``; :class:`WorkflowError` if the table does not allow it."""
    row = TRANSITIONS.get(state)
    if row is None:
        raise WorkflowError(f"unknown state {state!r}")
    if event not in row:
        allowed = ", ".join(sorted(row)) or "nothing"
        raise WorkflowError(f"an item in state {state} cannot be {_DONE.get(event, event)} (allowed: {allowed})",
                            extra={"state": state, "event": event})
    return row[event]


def _reason(reason: str | None) -> str:
    text = unicodedata.normalize("NFC", reason or "").strip()
    if not text:
        raise InvalidError("a rejection needs a reason")
    if len(text) > MAX_REASON or any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise InvalidError(f"a reason is at most {MAX_REASON} characters without control characters")
    return text


def _unapproved_members(conn: Connection, item: ItemRecord) -> list[ItemRecord]:
    members = library.get_many(conn, item.members)
    return [members[m] for m in dict.fromkeys(item.members) if members[m].state != "approved"]


def transition(tx: Tx, actor: Actor, item_id: int, event: str, *, reason: str | None = None) -> ItemRecord:
    """Submit, approve or reject an item (``edit`` happens through :func:`library.edit`)."""
    if event not in {"submit", "approve", "reject"}:
        raise ValueError(f"not a workflow event here: {event!r}")
    item = library.get(tx.conn, item_id, for_update=True)
    new_state = next_state(item.state, event)
    if event in REVIEWS and actor.name == item.author:
        raise ForbiddenError(f"you wrote library item {item_id}: another user must {event} it")
    reason = _reason(reason) if event == "reject" else None
    if item.kind == "playlist" and event in {"submit", "approve"}:
        pending = _unapproved_members(tx.conn, item)
        if pending:
            listed = ", ".join(f"{m.id} ({m.state})" for m in pending[:10])
            raise NotApprovedError(f"playlist {item_id} holds items that are not approved: {listed}",
                                   extra={"items": [m.id for m in pending]})
    values: dict[str, object] = {"state": new_state, "reason": reason}
    if event in REVIEWS:
        values.update(reviewed_by=actor.name, reviewed_at=tx.now)
    tx.conn.execute(update(library_items).where(library_items.c.id == item_id).values(**values))
    after = library.get(tx.conn, item_id)
    details: dict[str, object] = {"from": item.state, "to": new_state, "version": item.version,
                                  "title": item.title, "author": item.author}
    if reason is not None:
        details["reason"] = reason
    audit.record(tx, actor=actor.name, source=actor.source, action=f"library.{event}", target=f"item:{item_id}",
                 details=details)
    library.emit_change(tx, after, event, actor.name, previous_state=item.state, reason=reason)
    return after


def broadcast_parts(conn: Connection, item_id: int) -> tuple[ItemRecord, list[Part]]:
    """The item and the files to play for it, if it may be broadcast; :class:`NotApprovedError` otherwise."""
    item = library.get(conn, item_id)
    if item.state != "approved":
        raise NotApprovedError(f"library item {item_id} is {item.state}, not approved: only approved items can be "
                               "broadcast or scheduled", extra={"item": item_id, "state": item.state})
    if item.kind != "playlist":
        assert item.content is not None
        return item, [Part(item.id, item.content.sha256, item.content.media_type, item.content.duration_ms, 0)]
    pending = _unapproved_members(conn, item)
    if pending:
        listed = ", ".join(f"{m.id} ({m.state})" for m in pending[:10])
        raise NotApprovedError(f"playlist {item_id} holds items that are not approved: {listed}",
                               extra={"item": item_id, "items": [m.id for m in pending]})
    members = library.get_many(conn, item.members)
    parts, offset = [], 0
    for member_id in item.members:
        member = members[member_id]
        assert member.content is not None
        parts.append(Part(member.id, member.content.sha256, member.content.media_type, member.content.duration_ms,
                          offset))
        offset += member.content.duration_ms or 0
    return item, parts
