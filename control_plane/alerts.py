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

The records, the state machine and reading with scope are in :mod:`loa.control_plane.alert_records` (every public
name there is importable from here too).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from loa.control_plane import asplayed, audit, auth, levels, zones
from loa.control_plane.alert_records import (
    CLASSES,
    DEFAULT_TTL_S,
    MAX_PREROLL_MS,
    MAX_TEXT_BYTES,
    MAX_TTL_S,
    MAX_ZONES,
    MIN_TTL_S,
    STATES,
    STATUSES,
    TRANSITIONS,
    AlertAudio,
    AlertDispatcher,
    AlertDraft,
    AlertRecord,
    check_draft,
    get,
    list_alerts,
    next_state,
    require_control,
    require_visible,
)
from loa.control_plane.auth import Principal
from loa.control_plane.authority import Authority
from loa.control_plane.db import Database, Tx
from loa.control_plane.db.schema import NAME_LEN, alert_zones, alerts
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from loa.control_plane.events import Event
from loa.protocol.alert import Alert, AlertCancel
from loa.protocol.errors import LocalProtocolError

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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    draft = check_draft(draft)
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
    draft = check_draft(replace(before, **changes))
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
