"""/api/v1/alerts and /api/v1/authority: compose, trigger, confirm and cancel emergency alerts; the authority's
public key for provisioning devices."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, model_validator

from loa.control_plane import alerts, auth, levels
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, Source, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.errors import ConflictError
from loa.control_plane.settings import ControlPlane

router = APIRouter(tags=["alerts"], responses=PROBLEM_RESPONSES)
AlertId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ClassName = Literal["normal", "priority", "emergency"]
Status = Literal["actual", "exercise", "test"]
State = Literal["draft", "pending_approval", "approved", "active", "failed", "cancelled", "expired"]


class AlertCreate(m.Strict):
    zones: Annotated[list[m.Code], Field(min_length=1, max_length=alerts.MAX_ZONES,
                                         description="Target zones (each with every zone below it), in my scope")]
    status: Status = Field(description="CAP 1.2 status: devices play exercise and test alerts only when "
                                       "configured for exercises. No default: say which it is.")
    cls: ClassName = Field("emergency", alias="class")
    title: m.Label = Field("", examples=["Bão số 3: sơ tán khẩn cấp"])
    text: Annotated[str | None, Field(max_length=alerts.MAX_TEXT_BYTES,
                                      description="E-board text, at most 512 bytes of UTF-8")] = None
    content_id: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$",
                                            description="SHA-256 of the stored audio (Ogg Opus)")] = None
    library_item: Annotated[int | None, Field(ge=1, le=2**31 - 1,
                                              description="The library item the audio came from")] = None
    live_port: Annotated[int | None, Field(ge=1, le=65_535, description="A live RTP input port instead")] = None
    expires_in_s: Annotated[int, Field(ge=alerts.MIN_TTL_S, le=alerts.MAX_TTL_S)] = alerts.DEFAULT_TTL_S
    preroll_ms: Annotated[int, Field(ge=0, le=alerts.MAX_PREROLL_MS,
                                     description="Amplifier warm-up before the audio starts")] = 0
    trigger: bool = Field(False, description="Trigger at once (needs alerts.trigger)")

    @model_validator(mode="after")
    def _one_audio(self) -> AlertCreate:
        if (self.content_id is None) == (self.live_port is None):
            raise ValueError("give content_id (with library_item, if any) or live_port")
        if self.live_port is not None and self.library_item is not None:
            raise ValueError("library_item goes with content_id")
        return self


AUDIO_FIELDS = frozenset({"content_id", "library_item", "live_port"})


class AlertPatch(m.Strict):
    """A change to a draft or failed alert: fields left out stay as they are. The audio is replaced as a whole
    when any of ``content_id``, ``library_item``, ``live_port`` is given; ``text`` null (explicitly) removes the
    board text."""

    zones: Annotated[list[m.Code], Field(min_length=1, max_length=alerts.MAX_ZONES)] | None = None
    status: Status | None = None
    cls: ClassName | None = Field(None, alias="class")
    title: m.Label | None = None
    text: Annotated[str | None, Field(max_length=alerts.MAX_TEXT_BYTES,
                                      description="E-board text, at most 512 bytes of UTF-8")] = None
    content_id: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    library_item: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    live_port: Annotated[int | None, Field(ge=1, le=65_535)] = None
    expires_in_s: Annotated[int | None, Field(ge=alerts.MIN_TTL_S, le=alerts.MAX_TTL_S)] = None
    preroll_ms: Annotated[int | None, Field(ge=0, le=alerts.MAX_PREROLL_MS)] = None

    @model_validator(mode="after")
    def _one_audio(self) -> AlertPatch:
        if self.model_fields_set & AUDIO_FIELDS:
            if (self.content_id is None) == (self.live_port is None):
                raise ValueError("to replace the audio give content_id (with library_item, if any) or live_port")
            if self.live_port is not None and self.library_item is not None:
                raise ValueError("library_item goes with content_id")
        return self

    def changes(self) -> dict[str, Any]:
        """The :class:`~loa.control_plane.alerts.AlertDraft` fields this patch sets."""
        given = self.model_fields_set
        out: dict[str, Any] = {}
        if self.zones is not None:
            out["zones"] = tuple(self.zones)
        if self.status is not None:
            out["status"] = self.status
        if self.cls is not None:
            out["cls"] = alerts.CLASSES.index(self.cls)
        if self.title is not None:
            out["title"] = self.title
        if "text" in given:
            out["text"] = self.text
        if given & AUDIO_FIELDS:
            out["audio"] = alerts.AlertAudio(self.content_id, self.library_item, self.live_port)
        if self.expires_in_s is not None:
            out["ttl_s"] = self.expires_in_s
        if self.preroll_ms is not None:
            out["preroll_ms"] = self.preroll_ms
        return out


class AlertOut(BaseModel):
    id: int
    state: State = Field(description="As of now: an active alert past its expiry shows as expired")
    status: Status
    cls: ClassName = Field(alias="class")
    level: Literal["commune", "district", "province", "national"]
    title: str
    text: str | None
    zones: list[str]
    content_id: str | None
    library_item: int | None
    live_port: int | None
    expires_in_s: int
    preroll_ms: int
    created_by: str
    created_at: datetime
    triggered_by: str | None
    triggered_at: datetime | None
    approved_by: str | None
    approved_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None
    wire_id: str | None = Field(description="The id in the signed alert")
    kid: str | None = Field(description="Key id of the signing authority (hex)")
    bid: int | None
    issued_at: datetime | None
    expires_at: datetime | None
    body: str | None = Field(description="The signed alert body (msgpack), base64")
    sig: str | None = Field(description="Its Ed25519 signature, base64")
    cancel_body: str | None
    cancel_sig: str | None
    dispatch_error: str | None

    @classmethod
    def of(cls, a: alerts.AlertRecord, now: datetime) -> AlertOut:
        def b64(value: bytes | None) -> str | None:
            return None if value is None else base64.b64encode(value).decode("ascii")

        values: dict[str, Any] = {
            "id": a.id, "state": a.state_at(now), "status": a.status, "class": alerts.CLASSES[a.cls],
            "level": levels.LEVEL_NAMES[a.lvl], "title": a.title, "text": a.text, "zones": list(a.zones),
            "content_id": a.audio.content_id, "library_item": a.audio.library_item, "live_port": a.audio.live_port,
            "expires_in_s": a.ttl_s, "preroll_ms": a.preroll_ms, "created_by": a.created_by,
            "created_at": a.created_at, "triggered_by": a.triggered_by, "triggered_at": a.triggered_at,
            "approved_by": a.approved_by, "approved_at": a.approved_at, "cancelled_by": a.cancelled_by,
            "cancelled_at": a.cancelled_at, "wire_id": a.wire_id, "kid": a.kid, "bid": a.bid,
            "issued_at": a.issued_at, "expires_at": a.expires_at, "body": b64(a.body), "sig": b64(a.sig),
            "cancel_body": b64(a.cancel_body), "cancel_sig": b64(a.cancel_sig), "dispatch_error": a.dispatch_error,
        }
        return cls.model_validate(values)


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class AuthorityOut(BaseModel):
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key: str = Field(description="The 32-byte public key, base64: give it to devices (--authority-key)")
    public_key_hex: str
    kid: str = Field(description="First 8 bytes of BLAKE2s-256 of the public key, hex (the alerts' kid)")
    pem: str = Field(description="The public key as PEM (SubjectPublicKeyInfo)")


def _out(cp: ControlPlane, record: alerts.AlertRecord) -> AlertOut:
    return AlertOut.of(record, cp.db.clock())


@router.post("/api/v1/alerts", status_code=201, response_model=AlertOut, response_model_by_alias=True,
             **guard("alerts.write"))
def create_alert(body: AlertCreate, cp: CP, caller: Caller, source: Source) -> AlertOut:
    """Compose an alert for zones of my scope, at my scope's issuing level. With ``trigger`` it is triggered
    at once: under the two-person rule it then waits for a second NOC operator or admin to confirm."""
    if body.trigger:
        auth.require(caller, "alerts.trigger")
        if not cp.settings.alerts_two_person and cp.alert_dispatcher is None:  # refuse before storing a draft
            raise ConflictError("no broadcaster is attached to this control plane: the alert cannot be sent")
    draft = alerts.AlertDraft(
        zones=tuple(body.zones), status=body.status, cls=alerts.CLASSES.index(body.cls), title=body.title,
        text=body.text, ttl_s=body.expires_in_s, preroll_ms=body.preroll_ms,
        audio=alerts.AlertAudio(body.content_id, body.library_item, body.live_port))
    with cp.db.write() as tx:
        record = alerts.create(tx, caller, source, draft)
    if body.trigger:
        record = alerts.trigger(cp.db, caller, source, record.id, two_person=cp.settings.alerts_two_person,
                                authority=cp.authority, dispatcher=cp.alert_dispatcher)
    return _out(cp, record)


@router.get("/api/v1/alerts", response_model=AlertPage, response_model_by_alias=True, **guard("alerts.read"))
def list_alerts(*, cp: CP, caller: Caller, state: State | None = None, status: Status | None = None,
                zone: Annotated[str | None, Query(pattern=m.CODE_PATTERN)] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> AlertPage:
    """Alerts that target my area (a zone in my subtree, or one above me), newest first."""
    now = cp.db.clock()
    with cp.db.read() as conn:
        if zone is not None:
            auth.require_zone(conn, caller, zone)
        found = alerts.list_alerts(conn, caller, now=now, state=state, status=status, zone=zone,
                                   before=decode_cursor(cursor, int), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return AlertPage(items=[AlertOut.of(a, now) for a in found],
                     next_cursor=encode_cursor(found[-1].id) if more else None)


@router.get("/api/v1/alerts/{alert_id}", response_model=AlertOut, response_model_by_alias=True,
            **guard("alerts.read"))
def get_alert(alert_id: AlertId, cp: CP, caller: Caller) -> AlertOut:
    with cp.db.read() as conn:
        record = alerts.get(conn, alert_id)
        alerts.require_visible(conn, caller, record)
    return _out(cp, record)


@router.patch("/api/v1/alerts/{alert_id}", response_model=AlertOut, response_model_by_alias=True,
              **guard("alerts.write"))
def patch_alert(alert_id: AlertId, body: AlertPatch, cp: CP, caller: Caller, source: Source) -> AlertOut:
    """Edit a draft (or failed) alert whose zones, old and new, are all in my scope; fields left out stay. A
    failed alert returns to draft (its signature and dispatch record cleared): trigger it again. Any other
    state: 409 naming it (cancel the alert and compose another)."""
    with cp.db.write() as tx:
        record = alerts.edit(tx, caller, source, alert_id, body.changes())
    return _out(cp, record)


@router.post("/api/v1/alerts/{alert_id}/trigger", response_model=AlertOut, response_model_by_alias=True,
             **guard("alerts.trigger"))
def trigger_alert(alert_id: AlertId, cp: CP, caller: Caller, source: Source) -> AlertOut:
    """Trigger a draft (or a failed alert, again). Under the two-person rule it becomes ``pending_approval``;
    otherwise it is signed and sent now (``active``, or ``failed`` with ``dispatch_error``)."""
    record = alerts.trigger(cp.db, caller, source, alert_id, two_person=cp.settings.alerts_two_person,
                            authority=cp.authority, dispatcher=cp.alert_dispatcher)
    return _out(cp, record)


@router.post("/api/v1/alerts/{alert_id}/confirm", response_model=AlertOut, response_model_by_alias=True,
             **guard("alerts.trigger"))
def confirm_alert(alert_id: AlertId, cp: CP, caller: Caller, source: Source) -> AlertOut:
    """The second person: confirm a pending alert (not one I triggered; every target zone in my scope). It is
    signed with the authority key and sent now (``active``, or ``failed`` with ``dispatch_error``)."""
    record = alerts.confirm(cp.db, caller, source, alert_id, authority=cp.authority,
                            dispatcher=cp.alert_dispatcher)
    return _out(cp, record)


@router.post("/api/v1/alerts/{alert_id}/cancel", response_model=AlertOut, response_model_by_alias=True,
             **guard("alerts.trigger"))
def cancel_alert(alert_id: AlertId, cp: CP, caller: Caller, source: Source) -> AlertOut:
    """Cancel at once, without a second person: a sent alert gets a signed cancel, dispatched before it is
    recorded; a draft or pending one is withdrawn."""
    record = alerts.cancel(cp.db, caller, source, alert_id, authority=cp.authority,
                           dispatcher=cp.alert_dispatcher)
    return _out(cp, record)


@router.get("/api/v1/authority", response_model=AuthorityOut, tags=["alerts"], **guard("authority.read"))
def get_authority(cp: CP) -> AuthorityOut:
    """The alert authority's public key: provision every device with it, so that it plays only alerts this
    control plane signed."""
    a = cp.authority
    return AuthorityOut(public_key=a.public_base64, public_key_hex=a.public_key.hex(), kid=a.kid.hex(),
                        pem=a.public_pem)
