"""/api/v1/devices and /api/v1/enrolment-tokens: enrol, list, assign, rename, disable; one-time tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from loa.control_plane import auth, devices, enrolment
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, Source, actor, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES

router = APIRouter(tags=["devices"], responses=PROBLEM_RESPONSES)
DeviceId = Annotated[str, Path(pattern=m.DEVICE_ID_PATTERN)]


@router.get("/api/v1/devices", response_model=m.DevicePage, **guard("devices.read"))
def list_devices(*, cp: CP, caller: Caller, zone: Annotated[str | None, Query(pattern=m.CODE_PATTERN)] = None,
                 kind: m.Kind | None = None, online: bool | None = None, disabled: bool | None = None,
                 faulty: bool | None = None, unassigned: bool | None = None,
                 q: Annotated[str | None, Query(max_length=200)] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> m.DevicePage:
    """Devices in my scope by id; ``zone`` keeps those in that zone's subtree."""
    with cp.db.read() as conn:
        if zone is not None:
            auth.require_zone(conn, caller, zone)
        found = devices.list_devices(conn, within=caller.scope, zone=zone, kind=kind, online=online,
                                     disabled=disabled, faulty=faulty, unassigned=unassigned, q=q,
                                     after=decode_cursor(cursor, str), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return m.DevicePage(items=[m.Device.of(d) for d in found],
                        next_cursor=encode_cursor(found[-1].id) if more else None)


@router.post("/api/v1/devices", status_code=201, response_model=m.Device, **guard("devices.enrol"))
def enrol_device(body: m.DeviceEnrol, cp: CP, caller: Caller, source: Source) -> m.Device:
    """Enrol a device by its public key (as printed on it: base64 or hex) into a zone of my scope."""
    with cp.db.write() as tx:
        auth.require_zone(tx.conn, caller, body.zone)
        device = devices.enrol(tx, actor(caller, source), public_key=body.public_key, kind=body.kind,
                               zone=body.zone, name=body.name)
    return m.Device.of(device)


@router.get("/api/v1/devices/{device_id}", response_model=m.Device, **guard("devices.read"))
def get_device(device_id: DeviceId, cp: CP, caller: Caller) -> m.Device:
    with cp.db.read() as conn:
        device = devices.get(conn, device_id)
        auth.require_zone(conn, caller, device.zone)
    return m.Device.of(device)


@router.patch("/api/v1/devices/{device_id}", response_model=m.Device, **guard("devices.manage"))
def patch_device(device_id: DeviceId, body: m.DevicePatch, cp: CP, caller: Caller, source: Source) -> m.Device:
    """Rename, assign to a zone (null, given explicitly, unassigns), disable or re-enable a device."""
    given = body.model_fields_set
    who = actor(caller, source)
    with cp.db.write() as tx:
        device = devices.get(tx.conn, device_id)
        auth.require_zone(tx.conn, caller, device.zone)
        if "zone" in given:
            auth.require_zone(tx.conn, caller, body.zone)
            device = devices.assign(tx, who, device_id, body.zone)
        if body.name is not None:
            device = devices.rename(tx, who, device_id, body.name)
        if body.disabled is not None:
            device = devices.set_disabled(tx, who, device_id, body.disabled)
    return m.Device.of(device)


@router.get("/api/v1/devices/{device_id}/history", response_model=m.StatusHistory, **guard("devices.read"))
def get_history(device_id: DeviceId, cp: CP, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                cursor: str | None = None) -> m.StatusHistory:
    """Online/offline transitions, newest first."""
    with cp.db.read() as conn:
        device = devices.get(conn, device_id)
        auth.require_zone(conn, caller, device.zone)
        found = devices.history(conn, device_id, before=decode_cursor(cursor, int), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return m.StatusHistory(items=[m.StatusChange(at=c.at, online=c.online, reason=c.reason) for c in found],
                           next_cursor=encode_cursor(found[-1].id) if more else None)


@router.get("/api/v1/enrolment-tokens", response_model=m.EnrolmentTokenPage, **guard("devices.enrol"))
def list_tokens(cp: CP, caller: Caller, active: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                cursor: str | None = None) -> m.EnrolmentTokenPage:
    """Enrolment tokens for zones in my scope (``active``: only those still usable)."""
    with cp.db.read() as conn:
        found = enrolment.list_tokens(conn, within=caller.scope, active_at=cp.db.clock() if active else None,
                                    after=decode_cursor(cursor, int), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return m.EnrolmentTokenPage(items=[m.EnrolmentToken.of(t) for t in found],
                                next_cursor=encode_cursor(found[-1].id) if more else None)


@router.post("/api/v1/enrolment-tokens", status_code=201, response_model=m.EnrolmentTokenCreated,
             **guard("devices.enrol"))
def create_token(body: m.EnrolmentTokenCreate, cp: CP, caller: Caller, source: Source) -> m.EnrolmentTokenCreated:
    """A one-time token that enrols one device into a zone of my scope; shown only in this response."""
    with cp.db.write() as tx:
        auth.require_zone(tx.conn, caller, body.zone)
        token, record = enrolment.create_token(tx, actor(caller, source), zone=body.zone, kind=body.kind,
                                             name=body.name, ttl=timedelta(hours=body.ttl_hours))
    return m.EnrolmentTokenCreated(token=token, **m.EnrolmentToken.of(record).model_dump())


@router.delete("/api/v1/enrolment-tokens/{token_id}", status_code=204, response_class=Response,
               **guard("devices.enrol"))
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**62)], cp: CP, caller: Caller, source: Source) -> Response:
    with cp.db.write() as tx:
        token = enrolment.get_token(tx.conn, token_id)
        auth.require_zone(tx.conn, caller, token.zone)
        enrolment.revoke_token(tx, actor(caller, source), token_id)
    return Response(status_code=204)
