"""Emergency alerts as stored: the state machine (``TRANSITIONS``), the draft and its checks, the record, and
reading them within a user's scope. The workflow that writes them (compose, trigger, confirm, dispatch, cancel,
expire) is :mod:`loa.control_plane.alerts`, which re-exports every public name here.

Failure semantics: a draft that breaks a rule raises :class:`InvalidError` naming the field; a move the table
does not have raises :class:`ConflictError`; a missing alert :class:`NotFoundError`; an alert outside the
user's scope :class:`ForbiddenError`. Nothing here writes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, and_, exists, or_, select

from loa.control_plane import auth, zones
from loa.control_plane.auth import Principal
from loa.control_plane.db.schema import ALERT_STATES, ALERT_STATUSES, NAME_LEN, alert_zones, alerts
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError

__all__ = [
    "CLASSES",
    "DEFAULT_TTL_S",
    "MAX_PREROLL_MS",
    "MAX_TEXT_BYTES",
    "MAX_TTL_S",
    "MAX_ZONES",
    "MIN_TTL_S",
    "STATES",
    "STATUSES",
    "TRANSITIONS",
    "AlertAudio",
    "AlertDispatcher",
    "AlertDraft",
    "AlertRecord",
    "check_draft",
    "get",
    "list_alerts",
    "next_state",
    "require_control",
    "require_visible",
]

STATES = ALERT_STATES
STATUSES = ALERT_STATUSES
CLASSES = ("normal", "priority", "emergency")  # by wire value (PROTOCOL.md 6.1)
EMERGENCY = 2
DEFAULT_TTL_S = 3600
MIN_TTL_S, MAX_TTL_S = 60, 86_400
MAX_PREROLL_MS = 120_000
MAX_ZONES = 64
MAX_TEXT_BYTES = 512
_HEX = frozenset("0123456789abcdef")

# state -> event -> next state. "submit": a trigger under the two-person rule; "trigger": one without it;
# "confirm": the second person's approval; "dispatched"/"dispatch_failed": the broadcaster's answer; "edit": a
# change of the composition (a failed alert returns to draft).
TRANSITIONS: Mapping[str, Mapping[str, str]] = {
    "draft": {"submit": "pending_approval", "trigger": "approved", "cancel": "cancelled", "edit": "draft"},
    "pending_approval": {"confirm": "approved", "cancel": "cancelled"},
    "approved": {"dispatched": "active", "dispatch_failed": "failed", "cancel": "cancelled"},
    "active": {"cancel": "cancelled", "expire": "expired"},
    "failed": {"submit": "pending_approval", "trigger": "approved", "cancel": "cancelled", "edit": "draft"},
    "cancelled": {},
    "expired": {},
}
assert set(TRANSITIONS) == set(STATES)
assert all(target in STATES for moves in TRANSITIONS.values() for target in moves.values())


class AlertDispatcher(Protocol):
    """The broadcaster (the streamer, in the server): it sends signed alerts and cancels to devices.

    ``allocate_bid`` gives a broadcast id never used before (the signed body names it, so it is chosen first).
    ``trigger`` sends the alert and starts its audio, returning the bid; it raises if nothing was sent.
    ``cancel`` sends a signed cancel and stops the audio; it raises if the broadcaster does not know ``bid``
    (ended, expired, or sent by a run that has since stopped). Calls come from worker threads.
    """

    def allocate_bid(self) -> int: ...

    def trigger(self, body: bytes, sig: bytes, *, zones: Sequence[str], audio: AlertAudio, preroll_ms: int,
                text: str | None, status: str) -> int: ...

    def cancel(self, bid: int, body: bytes, sig: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class AlertAudio:
    """Stored content by SHA-256 (with the library item it came from, if any), or a live input port."""

    content_id: str | None = None
    library_item: int | None = None
    live_port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertDraft:
    zones: tuple[str, ...]
    status: str
    audio: AlertAudio
    cls: int = EMERGENCY
    title: str = ""
    text: str | None = None
    ttl_s: int = DEFAULT_TTL_S
    preroll_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    id: int
    state: str
    status: str
    cls: int
    lvl: int
    title: str
    text: str | None
    zones: tuple[str, ...]
    audio: AlertAudio
    ttl_s: int
    preroll_ms: int
    issuer_scope: str | None
    created_by: str
    created_at: datetime
    triggered_by: str | None
    triggered_at: datetime | None
    approved_by: str | None
    approved_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None
    wire_id: str | None
    kid: str | None
    bid: int | None
    issued_at: datetime | None
    expires_at: datetime | None
    body: bytes | None
    sig: bytes | None
    cancel_body: bytes | None
    cancel_sig: bytes | None
    dispatch_error: str | None
    updated_at: datetime

    def state_at(self, now: datetime) -> str:
        """The state as of ``now``: an active alert past its expiry is ``expired`` even before the sweep."""
        if self.state == "active" and self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.state


def next_state(state: str, event: str) -> str:
    """The state ``event`` leads to from ``state``; :class:`ConflictError` if the table has no such move."""
    target = TRANSITIONS.get(state, {}).get(event)
    if target is None:
        raise ConflictError(f"an alert that is {state.replace('_', ' ')} cannot take '{event}'")
    return target


# -- validation -------------------------------------------------------------------------------------------------

def _clean_text(value: str, what: str, *, max_chars: int | None = None, newlines: bool = False) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    allowed = {"\n"} if newlines else set()
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        raise InvalidError(f"{what} must not contain control characters")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidError(f"{what} must be at most {max_chars} characters")
    return value


def check_draft(draft: AlertDraft) -> AlertDraft:
    codes = tuple(dict.fromkeys(draft.zones))
    if not 1 <= len(codes) <= MAX_ZONES:
        raise InvalidError(f"an alert targets 1-{MAX_ZONES} zones")
    for code in codes:
        zones.check_code(code)
    if draft.status not in STATUSES:
        raise InvalidError(f"status must be one of {', '.join(STATUSES)}")
    if not 0 <= draft.cls <= EMERGENCY:
        raise InvalidError("class must be normal (0), priority (1) or emergency (2)")
    if not MIN_TTL_S <= draft.ttl_s <= MAX_TTL_S:
        raise InvalidError(f"an alert lives {MIN_TTL_S}-{MAX_TTL_S} seconds")
    if not 0 <= draft.preroll_ms <= MAX_PREROLL_MS:
        raise InvalidError(f"pre-roll is 0-{MAX_PREROLL_MS} ms")
    title = _clean_text(draft.title, "title", max_chars=NAME_LEN)
    text = _clean_text(draft.text, "board text", newlines=True) if draft.text is not None else ""
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise InvalidError(f"board text must be at most {MAX_TEXT_BYTES} bytes of UTF-8 "
                           f"(this is {len(text.encode('utf-8'))})")
    audio = draft.audio
    if (audio.content_id is None) == (audio.live_port is None):
        raise InvalidError("give the alert's audio: a content_id (with its library_item, if any) or a live_port")
    if audio.content_id is not None:
        if len(audio.content_id) != 64 or not set(audio.content_id) <= _HEX:
            raise InvalidError("content_id is the SHA-256 of the content: 64 lower-case hex digits")
        if audio.library_item is not None and not 1 <= audio.library_item <= 2**31 - 1:
            raise InvalidError("library_item is a library item id (a positive integer)")
    else:
        assert audio.live_port is not None
        if audio.library_item is not None:
            raise InvalidError("library_item goes with content_id, not with a live_port")
        if not 1 <= audio.live_port <= 65_535:
            raise InvalidError("live_port is a UDP port, 1-65535")
    return replace(draft, zones=codes, title=title, text=text or None)


# -- reading ----------------------------------------------------------------------------------------------------

def _record(row: Any, codes: Sequence[str]) -> AlertRecord:
    return AlertRecord(
        id=row.id, state=row.state, status=row.status, cls=row.cls, lvl=row.lvl, title=row.title, text=row.text,
        zones=tuple(codes),
        audio=AlertAudio(row.content_id, row.library_item, row.live_port), ttl_s=row.ttl_s,
        preroll_ms=row.preroll_ms, issuer_scope=row.issuer_scope, created_by=row.created_by,
        created_at=row.created_at, triggered_by=row.triggered_by, triggered_at=row.triggered_at,
        approved_by=row.approved_by, approved_at=row.approved_at, cancelled_by=row.cancelled_by,
        cancelled_at=row.cancelled_at, wire_id=row.wire_id, kid=row.kid, bid=row.bid, issued_at=row.issued_at,
        expires_at=row.expires_at, body=_bytes(row.body), sig=_bytes(row.sig), cancel_body=_bytes(row.cancel_body),
        cancel_sig=_bytes(row.cancel_sig), dispatch_error=row.dispatch_error, updated_at=row.updated_at)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _zones_of(conn: Connection, ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        query = (select(alert_zones.c.alert_id, alert_zones.c.zone).where(alert_zones.c.alert_id.in_(ids))
                 .order_by(alert_zones.c.alert_id, alert_zones.c.zone))
        for row in conn.execute(query):
            out[row.alert_id].append(row.zone)
    return out


def get(conn: Connection, alert_id: int, *, for_update: bool = False) -> AlertRecord:
    query = select(alerts).where(alerts.c.id == alert_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFoundError(f"no alert {alert_id}")
    return _record(row, _zones_of(conn, [alert_id])[alert_id])


def _visible_clause(conn: Connection, who: Principal) -> Any:
    """Alerts a scoped user sees: those targeting a zone in their subtree or a zone above them (it covers them)."""
    assert who.scope is not None
    above = zones.ancestors(conn, who.scope)
    return exists(select(alert_zones.c.alert_id).where(
        alert_zones.c.alert_id == alerts.c.id,
        or_(alert_zones.c.zone.in_(zones.subtree_codes(who.scope)), alert_zones.c.zone.in_(above))))


def require_visible(conn: Connection, who: Principal, record: AlertRecord) -> None:
    """:class:`ForbiddenError` unless one of the alert's zones is in the user's subtree or above their scope."""
    if who.scope is None:
        return
    above = set(zones.ancestors(conn, who.scope))
    if any(code in above or auth.in_scope(conn, who, code) for code in record.zones if _exists(conn, code)):
        return
    raise ForbiddenError(f"alert {record.id} targets no zone of your scope ({who.scope})")


def require_control(conn: Connection, who: Principal, record: AlertRecord) -> None:
    """:class:`ForbiddenError` unless every zone the alert targets is in the user's scope."""
    for code in record.zones:
        if not _exists(conn, code) or not auth.in_scope(conn, who, code):
            raise ForbiddenError(f"alert {record.id} targets zone {code!r}, outside your scope ({who.scope})")


def _exists(conn: Connection, code: str) -> bool:
    try:
        zones.get(conn, code)
    except NotFoundError:
        return False
    return True


def list_alerts(conn: Connection, who: Principal, *, now: datetime, state: str | None = None,
                status: str | None = None, zone: str | None = None, before: int | None = None,
                limit: int = 100) -> list[AlertRecord]:
    """Alerts the user may see, newest first; ``state`` as of ``now`` (``expired`` includes active ones past
    their expiry); ``zone``: those targeting a zone in that subtree; keyset-paginated by ``before`` (an id)."""
    query = select(alerts).order_by(alerts.c.id.desc()).limit(limit)
    if who.scope is not None:
        query = query.where(_visible_clause(conn, who))
    if state == "expired":
        query = query.where(or_(alerts.c.state == "expired",
                                and_(alerts.c.state == "active", alerts.c.expires_at <= now)))
    elif state == "active":
        query = query.where(alerts.c.state == "active", alerts.c.expires_at > now)
    elif state is not None:
        query = query.where(alerts.c.state == state)
    if status is not None:
        query = query.where(alerts.c.status == status)
    if zone is not None:
        query = query.where(exists(select(alert_zones.c.alert_id).where(
            alert_zones.c.alert_id == alerts.c.id, alert_zones.c.zone.in_(zones.subtree_codes(zone)))))
    if before is not None:
        query = query.where(alerts.c.id < before)
    rows = conn.execute(query).all()
    codes = _zones_of(conn, [r.id for r in rows])
    return [_record(r, codes[r.id]) for r in rows]
