"""Emergency alerts: compose, trigger, confirm (the two-person rule), sign, dispatch, cancel, expire.

An alert is composed as a *draft*: target zones inside the author's scope, audio (stored content by its id, with
the library item it came from if any, or a live input port), e-board text, class (emergency by default),
status ``actual``, ``exercise`` or ``test`` (CAP 1.2; chosen explicitly, never defaulted), time to live and
amplifier pre-roll. Its issuing level is the author's (:func:`loa.control_plane.levels.issuing_level`).

Triggering, under the two-person rule (the default), only asks for approval; a second NOC operator or admin,
not the one who triggered, whose scope covers every target zone, confirms. Without the rule a trigger approves at
once. Approval signs the alert with the authority key (:mod:`loa.control_plane.authority`) over a broadcast id
the broadcaster allocated, and hands ``(body, sig)`` to the broadcaster (:class:`AlertDispatcher`). The status
travels inside the signed body and beside it: a relay cannot turn an exercise into an actual alert, and devices
play exercise and test alerts only where their ``config`` says ``exercise: true`` (PROTOCOL.md 6.4 step 6).

A draft, or a failed alert, can be edited (:func:`edit`); a failed one returns to draft and must be triggered
(and confirmed) again. Any other state refuses the edit: cancel the alert and compose another.

Cancelling is never gated by a second person: an approved or active alert gets a signed cancel, sent to the
broadcaster *before* anything is written, so a cancel is as fast as signing and one call; then it is recorded.

``TRANSITIONS`` is the whole state machine. Every step is audited and published (topic ``alert``).

Failure semantics and crashes. Validation and permission errors raise with nothing written. Approval is one
transaction (signed, ``approved``); the dispatch follows it; its outcome (``active``, or ``failed`` with the
error) is a second transaction. A crash between them leaves the alert ``approved``: it may or may not have gone
out, and cancelling it is always safe (a cancel for an alert a device never saw changes nothing there). A crash
after a cancel was sent and before it was recorded leaves the alert ``active`` in the record: cancel again. A
cancel that lands while its alert is being dispatched is re-sent once the dispatch returns.
"""

from __future__ import annotations

import contextlib
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, and_, exists, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from loa.control_plane import asplayed, audit, auth, levels, zones
from loa.control_plane.auth import Principal
from loa.control_plane.authority import Authority
from loa.control_plane.db import Database, Tx
from loa.control_plane.db.schema import ALERT_STATES, ALERT_STATUSES, NAME_LEN, alert_zones, alerts
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from loa.control_plane.events import Event
from loa.protocol.alert import Alert, AlertCancel
from loa.protocol.errors import LocalProtocolError

__all__ = [
    "CLASSES",
    "DEFAULT_TTL_S",
    "STATES",
    "STATUSES",
    "TRANSITIONS",
    "AlertAudio",
    "AlertDispatcher",
    "AlertDraft",
    "AlertRecord",
    "cancel",
    "confirm",
    "create",
    "edit",
    "expire_due",
    "get",
    "list_alerts",
    "next_state",
    "require_control",
    "require_visible",
    "trigger",
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


def _check_draft(draft: AlertDraft) -> AlertDraft:
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


# -- writing ----------------------------------------------------------------------------------------------------

def _ns(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def _paths(conn: Connection, codes: Sequence[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for code in codes:
        try:
            found.update(dict.fromkeys(zones.ancestors(conn, code)))
        except NotFoundError:
            found[code] = None
    return tuple(found)


def _publish(tx: Tx, record: AlertRecord, action: str, by: str) -> None:
    tx.emit(Event("alert", {
        "id": record.id, "action": action, "state": record.state, "status": record.status,
        "class": CLASSES[record.cls], "level": levels.LEVEL_NAMES[record.lvl], "zones": list(record.zones),
        "title": record.title, "bid": record.bid,
        "expires_at": audit.format_time(record.expires_at) if record.expires_at else None,
        "by": by, "at": audit.format_time(tx.now),
    }, permission="alerts.read", zones=_paths(tx.conn, record.zones)))


def _audit(tx: Tx, who: str, source: str | None, action: str, record: AlertRecord, **details: Any) -> None:
    audit.record(tx, actor=who, source=source, action=action, target=f"alert:{record.id}",
                 details={"state": record.state, "status": record.status, **details})
    _publish(tx, record, action, who)


def _move(tx: Tx, record: AlertRecord, event: str, **values: Any) -> AlertRecord:
    """Apply ``event`` (by the table) if the alert is still in the state it was read in; ConflictError if not."""
    target = next_state(record.state, event)
    done = tx.conn.execute(update(alerts).where(alerts.c.id == record.id, alerts.c.state == record.state)
                           .values(state=target, updated_at=tx.now, **values))
    if done.rowcount != 1:
        raise ConflictError(f"alert {record.id} changed meanwhile; reload it")
    return get(tx.conn, record.id)


def issuing_level(conn: Connection, scope: str | None) -> int:
    if scope is None:
        return levels.NATIONAL
    path = zones.ancestors(conn, scope)
    return levels.issuing_level([zones.get(conn, code).level for code in path])


def create(tx: Tx, who: Principal, source: str | None, draft: AlertDraft) -> AlertRecord:
    """Store a draft targeting zones of ``who``'s scope, at ``who``'s issuing level."""
    draft = _check_draft(draft)
    for code in draft.zones:
        zones.get(tx.conn, code)
        auth.require_zone(tx.conn, who, code)
    audio = draft.audio
    result = tx.conn.execute(insert(alerts).values(
        state="draft", status=draft.status, cls=draft.cls, lvl=issuing_level(tx.conn, who.scope), title=draft.title,
        text=draft.text, content_id=audio.content_id, library_item=audio.library_item, live_port=audio.live_port,
        ttl_s=draft.ttl_s, preroll_ms=draft.preroll_ms, issuer_scope=who.scope, created_by=who.username,
        created_at=tx.now, updated_at=tx.now))
    (alert_id,) = result.inserted_primary_key or (None,)
    assert isinstance(alert_id, int)
    tx.conn.execute(insert(alert_zones), [{"alert_id": alert_id, "zone": code} for code in draft.zones])
    record = get(tx.conn, alert_id)
    _audit(tx, who.username, source, "alert.create", record, zones=list(record.zones), cls=record.cls,
           lvl=record.lvl, title=record.title, text=record.text, ttl_s=record.ttl_s, preroll_ms=record.preroll_ms,
           content_id=audio.content_id, library_item=audio.library_item, live_port=audio.live_port)
    return record


EDITABLE = frozenset({"zones", "status", "cls", "title", "text", "audio", "ttl_s", "preroll_ms"})
# Set when an alert is approved and dispatched: cleared when a failed alert is edited back to a draft.
_APPROVAL_FIELDS = ("triggered_by", "triggered_at", "approved_by", "approved_at", "wire_id", "kid", "bid",
                    "issued_at", "expires_at", "body", "sig", "dispatch_error")


def _draft_of(record: AlertRecord) -> AlertDraft:
    return AlertDraft(zones=record.zones, status=record.status, audio=record.audio, cls=record.cls,
                      title=record.title, text=record.text, ttl_s=record.ttl_s, preroll_ms=record.preroll_ms)


def _flat(draft: AlertDraft) -> dict[str, Any]:
    return {"zones": list(draft.zones), "status": draft.status, "cls": draft.cls, "title": draft.title,
            "text": draft.text, "content_id": draft.audio.content_id, "library_item": draft.audio.library_item,
            "live_port": draft.audio.live_port, "ttl_s": draft.ttl_s, "preroll_ms": draft.preroll_ms}


def edit(tx: Tx, who: Principal, source: str | None, alert_id: int, changes: Mapping[str, Any]) -> AlertRecord:
    """Change the composition of a draft or failed alert: ``changes`` maps :class:`AlertDraft` fields (zones,
    status, cls, title, text, audio, ttl_s, preroll_ms) to new values; the others stay. The result is checked as
    :func:`create` checks a draft, and every target zone (old and new) must be in ``who``'s scope.

    A failed alert returns to ``draft``: its signed body, signature, broadcast id, approval and dispatch error
    are cleared (the audit log keeps them), so it must be triggered, and confirmed, again. In any other state
    :class:`ConflictError` names the state; on any error nothing is written. The edit is audited
    (``alert.edit``, with each changed field before and after) and published; a draft edited to what it already
    says is left as it is, with no audit entry.
    """
    unknown = sorted(set(changes) - EDITABLE)
    if unknown:
        raise InvalidError(f"these alert fields cannot be edited: {', '.join(unknown)}")
    record = get(tx.conn, alert_id, for_update=True)
    require_control(tx.conn, who, record)
    state = record.state_at(tx.now)
    if "edit" not in TRANSITIONS[state]:
        raise ConflictError(f"alert {alert_id} is {state.replace('_', ' ')}: only a draft or a failed alert can be "
                            "edited; cancel it and compose a new one", extra={"state": state})
    before = _draft_of(record)
    draft = _check_draft(replace(before, **changes))
    draft = replace(draft, zones=tuple(sorted(draft.zones)))  # stored and read back in this order
    for code in draft.zones:
        if code not in record.zones:
            zones.get(tx.conn, code)
            auth.require_zone(tx.conn, who, code)
    old, new = _flat(before), _flat(draft)
    changed = {key: {"before": old[key], "after": new[key]} for key in old if old[key] != new[key]}
    if not changed and state == "draft":
        return record
    if "zones" in changed:
        tx.conn.execute(alert_zones.delete().where(alert_zones.c.alert_id == alert_id))
        tx.conn.execute(insert(alert_zones), [{"alert_id": alert_id, "zone": code} for code in draft.zones])
    values: dict[str, Any] = {key: new[key] for key in ("status", "cls", "title", "text", "content_id",
                                                       "library_item", "live_port", "ttl_s", "preroll_ms")}
    if record.state == "failed":
        values.update(dict.fromkeys(_APPROVAL_FIELDS))
    edited = _move(tx, record, "edit", **values)
    _audit(tx, who.username, source, "alert.edit", edited, was=record.state, changes=changed)
    return edited


def trigger(db: Database, who: Principal, source: str | None, alert_id: int, *, two_person: bool,
            authority: Authority, dispatcher: AlertDispatcher | None) -> AlertRecord:
    """Trigger a draft (or a failed alert, again): under the two-person rule it waits for confirmation
    (``pending_approval``); without it, it is approved, signed and dispatched now."""
    if two_person:
        with db.write() as tx:
            record = get(tx.conn, alert_id, for_update=True)
            require_control(tx.conn, who, record)
            record = _move(tx, record, "submit", triggered_by=who.username, triggered_at=tx.now,
                           dispatch_error=None)
            _audit(tx, who.username, source, "alert.trigger", record, two_person=True)
        return record
    return _approve(db, who, source, alert_id, "trigger", authority=authority, dispatcher=dispatcher)


def confirm(db: Database, who: Principal, source: str | None, alert_id: int, *, authority: Authority,
            dispatcher: AlertDispatcher | None) -> AlertRecord:
    """The second person's approval of a pending alert: signed and dispatched now."""
    return _approve(db, who, source, alert_id, "confirm", authority=authority, dispatcher=dispatcher)


def _approve(db: Database, who: Principal, source: str | None, alert_id: int, event: str, *, authority: Authority,
             dispatcher: AlertDispatcher | None) -> AlertRecord:
    if dispatcher is None:
        raise ConflictError("no broadcaster is attached to this control plane: the alert cannot be sent")
    with db.read() as conn:  # refuse before a broadcast id is spent
        record = get(conn, alert_id)
        require_control(conn, who, record)
        next_state(record.state, event)
        _two_people(record, who, event)
    try:
        bid = dispatcher.allocate_bid()
    except Exception as exc:  # noqa: BLE001 (the broadcaster's trouble, reported as such; nothing written)
        raise ConflictError(f"the broadcaster cannot take the alert now ({_one_line(exc)})") from None
    with db.write() as tx:
        record = get(tx.conn, alert_id, for_update=True)
        require_control(tx.conn, who, record)
        _two_people(record, who, event)
        issued = tx.now
        expires = issued + timedelta(seconds=record.ttl_s)
        wire = Alert(id=f"{record.id}-{secrets.token_hex(6)}", kid=authority.kid, status=record.status,
                     cls=record.cls, lvl=record.lvl, zones=record.zones, issued=_ns(issued), expires=_ns(expires),
                     bid=bid, text=record.text)
        try:
            body, sig = authority.sign_alert(wire)
        except LocalProtocolError as exc:
            raise InvalidError(f"alert {alert_id} cannot be signed: {exc}") from None
        values: dict[str, Any] = {"approved_by": who.username, "approved_at": tx.now, "wire_id": wire.id,
                                  "kid": authority.kid.hex(), "bid": bid, "issued_at": issued, "expires_at": expires,
                                  "body": body, "sig": sig, "dispatch_error": None}
        if event == "trigger":
            values.update(triggered_by=who.username, triggered_at=tx.now)
        record = _move(tx, record, event, **values)
        _audit(tx, who.username, source, f"alert.{event}", record, wire_id=wire.id, kid=authority.kid.hex(), bid=bid,
               expires_at=audit.format_time(expires), two_person=event == "confirm")
    return _dispatch(db, who.username, source, record, dispatcher)


def _two_people(record: AlertRecord, who: Principal, event: str) -> None:
    if event == "confirm" and record.triggered_by == who.username:
        raise ForbiddenError(f"the two-person rule: you triggered alert {record.id}, so another NOC operator "
                             "or admin must confirm it")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _dispatch(db: Database, who: str, source: str | None, record: AlertRecord,
              dispatcher: AlertDispatcher) -> AlertRecord:
    assert record.body is not None
    assert record.sig is not None
    assert record.bid is not None
    error = None
    try:
        got = dispatcher.trigger(record.body, record.sig, zones=record.zones, audio=record.audio,
                                 preroll_ms=record.preroll_ms, text=record.text, status=record.status)
        if got != record.bid:
            error = f"the broadcaster started bid {got} for an alert signed for bid {record.bid}"
    except Exception as exc:  # noqa: BLE001 (whatever the broadcaster raises, the alert is marked failed)
        error = _one_line(exc)
    resend_cancel = None
    with db.write() as tx:
        current = get(tx.conn, record.id, for_update=True)
        if current.state == "approved" and current.bid == record.bid:
            if error is None:
                current = _move(tx, current, "dispatched")
                asplayed.broadcast_started(tx, asplayed.BroadcastStart(
                    bid=record.bid, kind="alert", title=_title(record), zones=record.zones, cls=record.cls,
                    lvl=record.lvl, content_id=record.audio.content_id, alert_id=record.id, at=tx.now))
            else:
                current = _move(tx, current, "dispatch_failed", dispatch_error=error)
        elif error is None and current.cancel_body is not None and current.cancel_sig is not None:
            resend_cancel = (current.cancel_body, current.cancel_sig)  # cancelled while it was being sent
        _audit(tx, who, source, "alert.dispatch", current, bid=record.bid, ok=error is None, error=error,
               cancel_resent=resend_cancel is not None)
    if resend_cancel is not None:
        # The cancel was recorded; the broadcaster may already have ended the alert, which is what we want.
        with contextlib.suppress(Exception):
            dispatcher.cancel(record.bid, *resend_cancel)
    return current


def _title(record: AlertRecord) -> str:
    if record.title:
        return record.title
    if record.text:
        return record.text.split("\n", 1)[0][:NAME_LEN]
    return f"alert {record.id}"


def cancel(db: Database, who: Principal, source: str | None, alert_id: int, *, authority: Authority,
           dispatcher: AlertDispatcher | None) -> AlertRecord:
    """Withdraw a draft, pending or failed alert; stop an approved or active one with a signed cancel, sent
    before it is recorded. Needs no second person."""
    with db.read() as conn:
        record = get(conn, alert_id)
        require_control(conn, who, record)
    now = db.clock()
    if record.state_at(now) == "expired":
        raise ConflictError(f"alert {alert_id} expired at {audit.format_time(record.expires_at or now)}: "
                            "devices stopped it by themselves")
    next_state(record.state, "cancel")
    signed = record.state in ("approved", "active")
    body = sig = None
    error = None
    if signed:
        assert record.wire_id is not None
        assert record.kid is not None
        assert record.bid is not None
        if bytes.fromhex(record.kid) != authority.kid:
            raise ConflictError(f"alert {alert_id} was signed by authority key {record.kid}, not the current one "
                                f"({authority.kid.hex()}): only that key can cancel it")
        body, sig = authority.sign_cancel(AlertCancel(kid=authority.kid, cancel=record.wire_id, issued=_ns(now)))
        if dispatcher is None:
            error = "no broadcaster is attached to this control plane"
        else:
            try:
                dispatcher.cancel(record.bid, body, sig)
            except Exception as exc:  # noqa: BLE001 (recorded; the cancel stays signed and stored)
                error = _one_line(exc)
    try:
        with db.write() as tx:
            current = get(tx.conn, alert_id, for_update=True)
            if current.state != record.state:
                if current.state == "cancelled":
                    return current  # someone cancelled it meanwhile
                raise ConflictError(f"alert {alert_id} changed meanwhile (now {current.state}); reload it")
            values: dict[str, Any] = {"cancelled_by": who.username, "cancelled_at": tx.now}
            if signed:
                values.update(cancel_body=body, cancel_sig=sig, dispatch_error=error)
            current = _move(tx, current, "cancel", **values)
            if signed and current.bid is not None:
                asplayed.broadcast_ended(tx, current.bid, at=tx.now, reason="cancelled")
            _audit(tx, who.username, source, "alert.cancel", current, was=record.state, signed=signed,
                   sent=signed and error is None, error=error)
    except SQLAlchemyError:
        if signed:
            raise ConflictError(f"alert {alert_id}: the cancel was sent but could not be recorded; "
                                "cancel it again") from None
        raise
    return current


def expire_due(db: Database) -> list[int]:
    """Record the expiry of every active alert past its ``expires_at`` (devices already stopped playing it);
    returns their ids. Meant to run now and then; reads show such alerts as expired before it runs."""
    with db.write() as tx:
        rows = tx.conn.execute(select(alerts.c.id).where(alerts.c.state == "active", alerts.c.expires_at <= tx.now)
                               .order_by(alerts.c.id)).all()
        done = []
        for (alert_id,) in rows:
            record = get(tx.conn, alert_id, for_update=True)
            record = _move(tx, record, "expire")
            if record.bid is not None and record.expires_at is not None:
                asplayed.broadcast_ended(tx, record.bid, at=record.expires_at, reason="expired")
            _audit(tx, "system", None, "alert.expire", record,
                   expires_at=audit.format_time(record.expires_at) if record.expires_at else None)
            done.append(alert_id)
    return done
