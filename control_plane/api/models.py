"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI 3.1 schemas)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loa.control_plane import devices as dev
from loa.control_plane import enrolment as enr
from loa.control_plane import users as usr
from loa.control_plane import zones as zn
from loa.control_plane.audit import AuditEntry, AuditReport

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
DEVICE_ID_PATTERN = r"^[0-9a-f]{16}$"

Code = Annotated[str, Field(pattern=CODE_PATTERN, min_length=1, max_length=64, examples=["26734"])]
Name = Annotated[str, Field(min_length=1, max_length=200, examples=["Xã Hòa Hiệp Bắc"])]
Label = Annotated[str, Field(max_length=200)]
Role = Literal["admin", "noc", "editor", "approver", "scheduler", "viewer", "vendor"]
Kind = Literal["speaker", "board"]
Password = Annotated[str, Field(min_length=1, max_length=1024)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- auth and users ---------------------------------------------------------------------------------------------

class LoginRequest(Strict):
    username: Annotated[str, Field(min_length=1, max_length=256)]
    password: Password


class User(BaseModel):
    username: str
    display_name: str
    role: Role
    scope: str | None
    disabled: bool
    must_change_password: bool
    created_at: datetime
    password_changed_at: datetime

    @classmethod
    def of(cls, u: usr.UserRecord) -> User:
        return cls(username=u.username, display_name=u.display_name, role=u.role,  # type: ignore[arg-type]
                   scope=u.scope, disabled=u.disabled, must_change_password=u.must_change_password,
                   created_at=u.created_at, password_changed_at=u.password_changed_at)


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name)
    expires_at: datetime
    user: User


class PasswordChange(Strict):
    current: Password
    new: Annotated[str, Field(min_length=10, max_length=1024)]


class TokenCreate(Strict):
    name: Label = ""
    expires_in_days: Annotated[int | None, Field(ge=1, le=3650)] = None


class Token(BaseModel):
    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, t: usr.TokenRecord) -> Token:
        return cls(id=t.id, name=t.name, created_at=t.created_at, expires_at=t.expires_at,
                   last_used_at=t.last_used_at)


class TokenCreated(Token):
    token: str = Field(description="The token itself: shown only now, store it safely")


class UserCreate(Strict):
    username: Annotated[str, Field(pattern=USERNAME_PATTERN)]
    role: Role
    scope: Code | None = Field(None, description="Zone code of the user's scope; null for national scope")
    display_name: Label = ""
    password: Annotated[str | None, Field(min_length=10, max_length=1024)] = Field(
        None, description="Omit to generate a one-time password that must be changed at first login")


class UserCreated(BaseModel):
    user: User
    password: str | None = Field(description="The generated one-time password (shown only now), or null")


class UserPatch(Strict):
    role: Role | None = None
    scope: Code | None = Field(None, description="A zone code; null (explicitly) for national scope")
    display_name: Label | None = None
    disabled: bool | None = None


class PasswordReset(BaseModel):
    password: str = Field(description="The new one-time password (shown only now); it must be changed at login")


class UserPage(BaseModel):
    items: list[User]
    next_cursor: str | None


# -- zones ------------------------------------------------------------------------------------------------------

class Zone(BaseModel):
    code: str
    name: str
    parent: str | None
    level: str | None

    @classmethod
    def of(cls, z: zn.ZoneRecord) -> Zone:
        return cls(code=z.code, name=z.name, parent=z.parent, level=z.level)


class ZoneCreate(Strict):
    code: Code
    name: Name
    parent: Code | None = None
    level: Annotated[str | None, Field(max_length=32, examples=["commune"])] = None


class ZonePatch(Strict):
    name: Name | None = None
    level: Annotated[str | None, Field(max_length=32)] = None
    parent: Code | None = Field(None, description="Move under this zone; null (explicitly) to make it a root")


class ZonePage(BaseModel):
    items: list[Zone]
    next_cursor: str | None


class ZoneNode(BaseModel):
    depth: int = Field(description="0 for the zone asked for, 1 for its children...")
    zone: Zone


class ZoneSubtree(BaseModel):
    items: list[ZoneNode]
    next_offset: int | None


class ZonePath(BaseModel):
    path: list[Zone] = Field(description="From the root down to the zone")


class ImportResult(BaseModel):
    rows: int
    created: int
    updated: int
    unchanged: int
    sha256: str


# -- devices ----------------------------------------------------------------------------------------------------

class Device(BaseModel):
    id: str
    public_key: str = Field(description="X25519 public key, base64")
    kind: Kind
    name: str
    zone: str | None
    enrolled_at: datetime
    enrolled_by: str
    disabled: bool
    online: bool
    faulty: bool
    last_seen: datetime | None
    status: dict[str, Any] | None
    status_at: datetime | None
    model: str | None
    firmware: str | None

    @classmethod
    def of(cls, d: dev.DeviceRecord) -> Device:
        return cls(id=d.id, public_key=base64.b64encode(d.public_key).decode(), kind=d.kind,  # type: ignore[arg-type]
                   name=d.name, zone=d.zone, enrolled_at=d.enrolled_at, enrolled_by=d.enrolled_by,
                   disabled=d.disabled, online=d.online, faulty=d.faulty, last_seen=d.last_seen,
                   status=dict(d.status) if d.status else None, status_at=d.status_at, model=d.model,
                   firmware=d.firmware)


class DeviceEnrol(Strict):
    public_key: Annotated[str, Field(min_length=1, max_length=100, description="base64 or 64 hex digits")]
    kind: Kind
    zone: Code | None = None
    name: Label = ""


class DevicePatch(Strict):
    name: Label | None = None
    zone: Code | None = Field(None, description="Assign to this zone; null (explicitly) to unassign")
    disabled: bool | None = None


class DevicePage(BaseModel):
    items: list[Device]
    next_cursor: str | None


class StatusChange(BaseModel):
    at: datetime
    online: bool
    reason: str | None


class StatusHistory(BaseModel):
    items: list[StatusChange]
    next_cursor: str | None


class EnrolmentTokenCreate(Strict):
    zone: Code
    kind: Kind | None = None
    name: Label = ""
    ttl_hours: Annotated[int, Field(ge=1, le=2160)] = 168


class EnrolmentToken(BaseModel):
    id: int
    hint: str = Field(description="The token's first four characters")
    zone: str
    kind: Kind | None
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    revoked_at: datetime | None
    device_id: str | None

    @classmethod
    def of(cls, t: enr.EnrolmentToken) -> EnrolmentToken:
        return cls(id=t.id, hint=t.hint, zone=t.zone, kind=t.kind, name=t.name,  # type: ignore[arg-type]
                   created_by=t.created_by, created_at=t.created_at, expires_at=t.expires_at,
                   redeemed_at=t.redeemed_at, revoked_at=t.revoked_at, device_id=t.device_id)


class EnrolmentTokenCreated(EnrolmentToken):
    token: str = Field(description="The token to enter into the device: shown only now")


class EnrolmentTokenPage(BaseModel):
    items: list[EnrolmentToken]
    next_cursor: str | None


# -- audit and system -------------------------------------------------------------------------------------------

class AuditEntryOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    source: str | None
    hash: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryOut:
        return cls(seq=e.seq, at=e.at, actor=e.actor, action=e.action, target=e.target, details=dict(e.details),
                   source=e.source, hash=e.hash)


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    head: str = Field(description="SEQ:HASH of the last good entry; record it elsewhere to pin the chain")
    bad_seq: int | None
    problem: str | None
    summary: str

    @classmethod
    def of(cls, r: AuditReport) -> AuditVerification:
        return cls(ok=r.ok, entries=r.entries, head=r.head, bad_seq=r.bad_seq, problem=r.problem,
                   summary=r.summary())


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
    schema_revision: str
