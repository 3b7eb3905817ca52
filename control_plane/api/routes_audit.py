"""/api/v1/audit: read and verify the audit log (national admins: the log covers every zone)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from loa.control_plane import audit, auth
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.errors import InvalidError

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=PROBLEM_RESPONSES)
Filter = Annotated[str | None, Query(max_length=200)]
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?$"
Time = Annotated[str | None, Query(pattern=ISO_TIME, description="ISO 8601 time; UTC when it has no offset",
                                   examples=["2025-03-01T07:00:00+07:00"])]


def _utc(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidError(f"{name}: {text!r} is not a valid time") from None


@router.get("", response_model=m.AuditPage, **guard("audit.read"))
def list_entries(*, cp: CP, caller: Caller, actor: Filter = None, action: Filter = None, target: Filter = None,
                 since: Time = None, until: Time = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> m.AuditPage:
    """Entries newest first, filtered by actor, action, target and time (``since`` inclusive, ``until``
    exclusive)."""
    auth.require_national(caller)
    start, end = _utc(since, "since"), _utc(until, "until")
    with cp.db.read() as conn:
        found = audit.entries(conn, before=decode_cursor(cursor, int), limit=limit + 1, actor=actor, action=action,
                              target=target, since=start, until=end)
    more = len(found) > limit
    found = found[:limit]
    return m.AuditPage(items=[m.AuditEntryOut.of(e) for e in found],
                       next_cursor=encode_cursor(found[-1].seq) if more else None)


@router.get("/verify", response_model=m.AuditVerification, **guard("audit.read"))
def verify(cp: CP, caller: Caller) -> m.AuditVerification:
    """Walk the whole hash chain; ``ok`` false names the first missing, altered, reordered or inserted entry."""
    auth.require_national(caller)
    with cp.db.read() as conn:
        report = audit.verify(conn)
    return m.AuditVerification.of(report)
