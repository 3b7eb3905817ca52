"""/api/v1/zones: the zone tree, subtrees, paths, and CSV import of a province's administrative tree."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Path, Query, Response, UploadFile

from loa.control_plane import auth, zones
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, Source, actor, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.errors import ControlPlaneError, ForbiddenError
from loa.control_plane.zone_import import MAX_BYTES, import_csv

router = APIRouter(prefix="/api/v1/zones", tags=["zones"], responses=PROBLEM_RESPONSES)
ZoneCode = Annotated[str, Path(pattern=m.CODE_PATTERN)]


class TooLargeError(ControlPlaneError):
    status, kind, title = 413, "too-large", "Content too large"


def _not_own_scope(caller: auth.Principal, code: str) -> None:
    if caller.scope == code:
        raise ForbiddenError(f"zone {code!r} is your scope zone: only a user above it may change it")


@router.get("", response_model=m.ZonePage, **guard("zones.read"))
def list_zones(*, cp: CP, caller: Caller, parent: Annotated[str | None, Query(pattern=m.CODE_PATTERN)] = None,
               roots: bool = False, level: Annotated[str | None, Query(max_length=32)] = None,
               q: Annotated[str | None, Query(max_length=200)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> m.ZonePage:
    """Zones in my scope by code; ``parent`` lists one zone's children, ``roots`` the top of the tree, ``q``
    searches codes and names."""
    with cp.db.read() as conn:
        found = zones.list_zones(conn, within=caller.scope, parent=zones.ROOT if roots else parent, level=level,
                                 q=q, after=decode_cursor(cursor, str), limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return m.ZonePage(items=[m.Zone.of(z) for z in found], next_cursor=encode_cursor(found[-1].code) if more else None)


@router.post("", status_code=201, response_model=m.Zone, **guard("zones.write"))
def create_zone(body: m.ZoneCreate, cp: CP, caller: Caller, source: Source) -> m.Zone:
    """Create a zone under a parent in my scope (a root zone needs national scope)."""
    with cp.db.write() as tx:
        auth.require_zone(tx.conn, caller, body.parent)
        zone = zones.create(tx, actor(caller, source), code=body.code, name=body.name, parent=body.parent,
                            level=body.level)
    return m.Zone.of(zone)


@router.post("/import", response_model=m.ImportResult, **guard("zones.write"))
def import_zones(file: Annotated[UploadFile, File(description="CSV: code,name,parent[,level], UTF-8")], cp: CP,
                 caller: Caller, source: Source) -> m.ImportResult:
    """Import (create or update) zones from a CSV file, all or nothing; a 422 problem lists every bad line."""
    data = file.file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise TooLargeError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    with cp.db.write() as tx:
        report = import_csv(tx, actor(caller, source), data, within=caller.scope)
    return m.ImportResult(rows=report.rows, created=report.created, updated=report.updated,
                          unchanged=report.unchanged, sha256=report.sha256)


@router.get("/{code}", response_model=m.Zone, **guard("zones.read"))
def get_zone(code: ZoneCode, cp: CP, caller: Caller) -> m.Zone:
    with cp.db.read() as conn:
        zone = zones.get(conn, code)
        auth.require_zone(conn, caller, code)
    return m.Zone.of(zone)


@router.patch("/{code}", response_model=m.Zone, **guard("zones.write"))
def patch_zone(code: ZoneCode, body: m.ZonePatch, cp: CP, caller: Caller, source: Source) -> m.Zone:
    """Rename, relevel or move a zone (with its subtree). ``parent`` null (given explicitly) makes it a root."""
    given = body.model_fields_set
    with cp.db.write() as tx:
        zones.get(tx.conn, code)
        auth.require_zone(tx.conn, caller, code)
        _not_own_scope(caller, code)
        parent: str | zones._Root | None = None
        if "parent" in given:
            auth.require_zone(tx.conn, caller, body.parent)
            parent = zones.ROOT if body.parent is None else body.parent
        zone = zones.update(tx, actor(caller, source), code, name=body.name, level=body.level, parent=parent)
    return m.Zone.of(zone)


@router.delete("/{code}", status_code=204, response_class=Response, **guard("zones.write"))
def delete_zone(code: ZoneCode, cp: CP, caller: Caller, source: Source) -> Response:
    """Delete a zone nothing refers to. Otherwise 409 naming what does, with a count per kind (child zones,
    devices, users, enrolment tokens, library items, schedule entries, open alerts), also as ``used_by``."""
    with cp.db.write() as tx:
        zones.get(tx.conn, code)
        auth.require_zone(tx.conn, caller, code)
        _not_own_scope(caller, code)
        zones.delete(tx, actor(caller, source), code)
    return Response(status_code=204)


@router.get("/{code}/subtree", response_model=m.ZoneSubtree, **guard("zones.read"))
def get_subtree(code: ZoneCode, cp: CP, caller: Caller, offset: Annotated[int, Query(ge=0, le=10**7)] = 0,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> m.ZoneSubtree:
    """The zone and everything below it, shallowest first (``offset``/``limit`` pages through large trees)."""
    with cp.db.read() as conn:
        zones.get(conn, code)
        auth.require_zone(conn, caller, code)
        found = zones.subtree(conn, code, offset=offset, limit=limit + 1)
    more = len(found) > limit
    return m.ZoneSubtree(items=[m.ZoneNode(depth=d, zone=m.Zone.of(z)) for d, z in found[:limit]],
                         next_offset=offset + limit if more else None)


@router.get("/{code}/path", response_model=m.ZonePath, **guard("zones.read"))
def get_path(code: ZoneCode, cp: CP, caller: Caller) -> m.ZonePath:
    """The zones from the root down to this one (what a device in it is given as its zone path)."""
    with cp.db.read() as conn:
        zones.get(conn, code)
        auth.require_zone(conn, caller, code)
        path = [zones.get(conn, c) for c in zones.ancestors(conn, code)]
    return m.ZonePath(path=[m.Zone.of(z) for z in path])
