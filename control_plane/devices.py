"""Devices: enrolment by public key, zone assignment, disabling, live status and its history.

A device is its X25519 public key; its id is :func:`loa.protocol.device_id` of the key (PROTOCOL.md section
1). An installer enters the key (base64 or hex), or the device presents a one-time enrolment token
(:mod:`loa.control_plane.enrolment`).

Live status (online, last seen, the latest telemetry, faults) is written by the streamer integration through
:func:`record_statuses`; each online/offline transition is kept in the status history and published as a
``device.status`` event. Status updates are not audited (they are not anyone's change); enrolment, assignment,
renaming, disabling and tokens are.

Failure semantics: every function validates first and raises :class:`InvalidError`, :class:`NotFoundError` or
:class:`ConflictError` with nothing written.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from loa.control_plane import audit, zones
from loa.control_plane.auth import Actor
from loa.control_plane.db import Tx
from loa.control_plane.db.schema import DEVICE_KINDS, NAME_LEN, device_status_history, devices
from loa.control_plane.errors import ConflictError, InvalidError, NotFoundError
from loa.control_plane.events import Event
from loa.protocol import device_id
from loa.protocol.keytext import decode_key, is_weak_public_key

__all__ = [
    "DEVICE_KINDS",
    "DeviceRecord",
    "StatusChange",
    "StatusUpdate",
    "add",
    "assign",
    "check_kind",
    "check_name",
    "enrol",
    "get",
    "history",
    "list_devices",
    "parse_public_key",
    "record_status",
    "record_statuses",
    "rename",
    "set_disabled",
]

KEY_SIZE = 32
_CHUNK = 500  # ids per IN (...) list: well inside every backend's limit on bound parameters
_STATUS_COLUMNS = ("online", "faulty", "last_seen", "status", "status_at", "model", "firmware")


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: str
    public_key: bytes
    kind: str
    name: str
    zone: str | None
    enrolled_at: datetime
    enrolled_by: str
    disabled: bool
    online: bool
    faulty: bool
    last_seen: datetime | None
    status: Mapping[str, Any] | None
    status_at: datetime | None
    model: str | None
    firmware: str | None


@dataclass(frozen=True, slots=True)
class StatusChange:
    id: int
    at: datetime
    online: bool
    reason: str | None


def parse_public_key(text: str) -> bytes:
    """A device key as base64 (standard or URL-safe, padding optional) or 64 hex digits -> 32 bytes.

    Raises :class:`InvalidError` unless it is 32 bytes and a usable X25519 key (not of small order: such a key gives
    an all-zero shared secret and no security).
    """
    try:
        key = decode_key(text)
    except ValueError:
        raise InvalidError("public_key must be a 32-byte X25519 key written as base64 or 64 hex digits") from None
    if is_weak_public_key(key):
        raise InvalidError("public_key is a weak (small-order) X25519 key: not a real device key")
    return key


def check_name(name: str) -> str:
    name = unicodedata.normalize("NFC", name).strip()
    if len(name) > NAME_LEN or any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidError(f"device name must be at most {NAME_LEN} characters without control characters")
    return name


def check_kind(kind: str) -> str:
    if kind not in DEVICE_KINDS:
        raise InvalidError(f"device kind must be one of {', '.join(DEVICE_KINDS)}")
    return kind


def _record(row: Any) -> DeviceRecord:
    return DeviceRecord(row.id, bytes(row.public_key), row.kind, row.name, row.zone, row.enrolled_at,
                        row.enrolled_by, row.disabled, row.online, row.faulty, row.last_seen, row.status,
                        row.status_at, row.model, row.firmware)


def get(conn: Connection, ident: str) -> DeviceRecord:
    row = conn.execute(select(devices).where(devices.c.id == ident)).one_or_none()
    if row is None:
        raise NotFoundError(f"no device {ident!r}")
    return _record(row)


def add(tx: Tx, key: bytes, *, kind: str, zone: str | None, name: str, by: str) -> DeviceRecord:
    ident = device_id(key)
    if tx.conn.execute(select(devices.c.id).where(devices.c.public_key == key)).first() is not None:
        raise ConflictError(f"a device with this public key is already enrolled (id {ident})")
    if tx.conn.execute(select(devices.c.id).where(devices.c.id == ident)).first() is not None:
        raise ConflictError(f"device id {ident} is taken by another key")
    if zone is not None:
        zones.get(tx.conn, zone)
    tx.conn.execute(insert(devices).values(id=ident, public_key=key, kind=kind, name=name, zone=zone,
                                           enrolled_at=tx.now, enrolled_by=by))
    return get(tx.conn, ident)


def enrol(tx: Tx, actor: Actor, *, public_key: str | bytes, kind: str, zone: str | None,
          name: str = "") -> DeviceRecord:
    """Enrol a device by its public key (text as an installer types it, or 32 raw bytes)."""
    key = parse_public_key(public_key) if isinstance(public_key, str) else public_key
    if len(key) != KEY_SIZE:
        raise InvalidError("public_key must be 32 bytes")
    record = add(tx, key, kind=check_kind(kind), zone=zone, name=check_name(name), by=actor.name)
    audit.record(tx, actor=actor.name, source=actor.source, action="device.enrol", target=record.id,
                 details={"kind": record.kind, "zone": record.zone, "name": record.name,
                          "public_key": base64.b64encode(key).decode()})
    return record


def list_devices(conn: Connection, *, within: str | None = None, zone: str | None = None, kind: str | None = None,
                 online: bool | None = None, disabled: bool | None = None, faulty: bool | None = None,
                 unassigned: bool | None = None, q: str | None = None, after: str | None = None,
                 limit: int = 100) -> list[DeviceRecord]:
    """Devices ordered by id; ``within`` limits to a zone subtree (and excludes unassigned devices), ``zone`` to
    one zone's subtree as a filter; keyset-paginated by ``after`` (the last id seen)."""
    query = select(devices).order_by(devices.c.id).limit(limit)
    for subtree_of in (within, zone):
        if subtree_of is not None:
            query = query.where(devices.c.zone.in_(zones.subtree_codes(subtree_of)))
    for column, value in ((devices.c.kind, kind), (devices.c.online, online), (devices.c.disabled, disabled),
                          (devices.c.faulty, faulty)):
        if value is not None:
            query = query.where(column == value)
    if unassigned is not None:
        query = query.where(devices.c.zone.is_(None) if unassigned else devices.c.zone.is_not(None))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(devices.c.id.like(pattern, escape="\\"), devices.c.name.like(pattern, escape="\\")))
    if after is not None:
        query = query.where(devices.c.id > after)
    return [_record(r) for r in conn.execute(query)]


def _change(tx: Tx, actor: Actor, ident: str, action: str, **values: Any) -> DeviceRecord:
    before = get(tx.conn, ident)
    changed = {k: v for k, v in values.items() if getattr(before, k) != v}
    if not changed:
        return before
    tx.conn.execute(update(devices).where(devices.c.id == ident).values(**changed))
    audit.record(tx, actor=actor.name, source=actor.source, action=action, target=ident,
                 details={"before": {k: getattr(before, k) for k in changed}, "after": changed})
    return get(tx.conn, ident)


def assign(tx: Tx, actor: Actor, ident: str, zone: str | None) -> DeviceRecord:
    """Move a device to ``zone`` (None: unassigned). The streamer learns the new zone path from the caller."""
    if zone is not None:
        zones.get(tx.conn, zone)
    return _change(tx, actor, ident, "device.assign", zone=zone)


def rename(tx: Tx, actor: Actor, ident: str, name: str) -> DeviceRecord:
    return _change(tx, actor, ident, "device.rename", name=check_name(name))


def set_disabled(tx: Tx, actor: Actor, ident: str, disabled: bool) -> DeviceRecord:
    """Disable (its handshakes are refused and it is dropped from broadcasts) or re-enable a device."""
    return _change(tx, actor, ident, "device.disable" if disabled else "device.enable", disabled=disabled)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What the streamer learnt about one device (see :func:`record_statuses`)."""

    device: str
    online: bool | None = None
    status: Mapping[str, Any] | None = None
    reason: str | None = None


def record_status(tx: Tx, ident: str, *, online: bool | None = None, status: Mapping[str, Any] | None = None,
                  reason: str | None = None) -> DeviceRecord:
    """Store what the streamer learnt about one device: :func:`record_statuses` of one update."""
    return record_statuses(tx, [StatusUpdate(ident, online, status, reason)])[ident]


def record_statuses(tx: Tx, updates: Sequence[StatusUpdate]) -> dict[str, DeviceRecord]:
    """Store ``updates`` in order: ``online`` transitions (kept in history) and the latest ``status``; returns
    each device's record afterwards.

    ``status`` is merged into the stored status (keys absent from it keep their values). A ``faults`` entry sets
    the device's ``faulty`` flag. An update that is not ``online=False`` sets ``last_seen``. Publishes
    ``device.status`` at each update that changes online or faulty. Raises :class:`NotFoundError`, with nothing
    written, if a device is unknown. A batch costs a few statements whatever its length (one read of the devices,
    one update of those that changed, one insert of the transitions), which is what lets the data plane keep up
    with ten thousand devices' reports.
    """
    idents = sorted({u.device for u in updates})
    rows: dict[str, Any] = {}
    for start in range(0, len(idents), _CHUNK):
        chunk = idents[start:start + _CHUNK]
        rows.update({row.id: row for row in tx.conn.execute(select(devices).where(devices.c.id.in_(chunk)))})
    missing = [ident for ident in idents if ident not in rows]
    if missing:
        raise NotFoundError(f"no device {missing[0]!r}")
    state = {ident: _record(row) for ident, row in rows.items()}
    changed: set[str] = set()
    transitions: list[dict[str, Any]] = []
    flipped: list[tuple[str, DeviceRecord, str | None]] = []  # (device, record, reason) of each event, in order
    for update_ in updates:
        ident = update_.device
        before = state[ident]
        after = before
        if update_.online is not False:
            after = replace(after, last_seen=tx.now)
        if update_.status is not None:
            merged = dict(before.status or {})
            merged.update(update_.status)
            fw, model = merged.get("fw"), merged.get("model")
            after = replace(after, status=merged, status_at=tx.now, faulty=bool(merged.get("faults")),
                            firmware=fw[:64] if isinstance(fw, str) else after.firmware,
                            model=model[:64] if isinstance(model, str) else after.model)
        reason = update_.reason
        if update_.online is not None and update_.online != before.online:
            after = replace(after, online=update_.online)
            transitions.append({"device_id": ident, "at": tx.now, "online": update_.online,
                                "reason": (reason or None) and reason[:64]})
        if after is before:
            continue
        state[ident] = after
        changed.add(ident)
        if (after.online, after.faulty) != (before.online, before.faulty):
            flipped.append((ident, after, reason))
    # the events' zone paths, one query for the batch
    paths = zones.ancestors_many(tx.conn, [record.zone for _, record, _ in flipped if record.zone is not None])
    for ident, after, reason in flipped:
        path = None
        if after.zone is not None:
            path = paths.get(after.zone) or zones.ancestors(tx.conn, after.zone)  # NotFoundError as before
        faults = (after.status or {}).get("faults") or []
        faults = list(faults) if isinstance(faults, list | tuple) else [faults]
        tx.emit(Event("device.status", {"device": ident, "zone": after.zone, "online": after.online,
                                        "faulty": after.faulty, "faults": faults, "reason": reason,
                                        "at": audit.format_time(tx.now)},
                      permission="devices.read", zones=path))
    if changed:
        tx.conn.execute(
            update(devices).where(devices.c.id == bindparam("b_id")).values(
                {column: bindparam(f"b_{column}") for column in _STATUS_COLUMNS}),
            [{"b_id": ident, **{f"b_{column}": getattr(state[ident], column) for column in _STATUS_COLUMNS}}
             for ident in sorted(changed)])
    if transitions:
        tx.conn.execute(insert(device_status_history), transitions)
    return {ident: state[ident] for ident in idents}


def history(conn: Connection, ident: str, *, before: int | None = None, limit: int = 100) -> list[StatusChange]:
    """Online/offline transitions of a device, newest first; ``before``: only those older than that change id."""
    get(conn, ident)
    query = (select(device_status_history).where(device_status_history.c.device_id == ident)
             .order_by(device_status_history.c.id.desc()).limit(limit))
    if before is not None:
        query = query.where(device_status_history.c.id < before)
    return [StatusChange(r.id, r.at, r.online, r.reason) for r in conn.execute(query)]
