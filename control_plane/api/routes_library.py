"""/api/v1/library and /api/v1/playlists: upload and edit items, the approval workflow, playlists, content.

Editors (and NOC operators, admins) create, edit, submit and delete items in their scope; approvers (and NOC
operators, admins) approve or reject items in their scope that someone else wrote; everyone with
``library.read`` sees the items of their scope and those issued above it. An upload is checked, normalised and
stored before its row is written: a refused upload (422, naming the file; 413 when too large) stores nothing.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import Connection

from loa.control_plane import approval, auth, levels, library, media, zones
from loa.control_plane.api import models as m
from loa.control_plane.api import models_library as ml
from loa.control_plane.api.deps import CP, Caller, Source, actor, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.content import ContentStore
from loa.control_plane.errors import ControlPlaneError, ForbiddenError, InvalidError, NotFoundError
from loa.control_plane.settings import ControlPlane

router = APIRouter(tags=["library"], responses=PROBLEM_RESPONSES)
ItemPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
CHUNK = 1 << 20
CONTENT_TYPES = ("audio/ogg", "image/png", "image/jpeg", "text/plain; charset=utf-8")


class TooLargeError(ControlPlaneError):
    status, kind, title = 413, "too-large", "Content too large"


def store_of(cp: ControlPlane) -> ContentStore:
    """The content store of a control plane: ``DATA_DIR/content``."""
    return ContentStore(cp.settings.data_dir / "content")


def _page(found: list[library.ItemRecord], limit: int) -> ml.LibraryPage:
    more = len(found) > limit
    found = found[:limit]
    return ml.LibraryPage(items=[ml.LibraryItem.of(i) for i in found],
                          next_cursor=encode_cursor(found[-1].id) if more else None)


def _owner(conn: Connection, caller: auth.Principal, zone: str | None, given: bool, level: str | None,
           ) -> tuple[str | None, int]:
    """The owner zone (default: the caller's scope) and issuing level (default: the caller's), both checked."""
    owner = zone if given else caller.scope
    auth.require_zone(conn, caller, owner)
    path = None if caller.scope is None else [zones.get(conn, c).level for c in zones.ancestors(conn, caller.scope)]
    mine = levels.issuing_level(path)
    lvl = mine if level is None else library.level_of(level)
    if lvl > mine:
        raise ForbiddenError(f"your issuing level is {library.LEVELS[mine]}: you cannot issue at "
                             f"{library.LEVELS[lvl]} level")
    return owner, lvl


def _receive(cp: CP, file: UploadFile, store: ContentStore, suffix: str) -> tuple[str, FilePath]:
    """Copy an upload into the store's incoming folder, refusing it (413) past the size limit."""
    limit = cp.settings.library_max_upload_bytes
    name = media.display_name(file.filename)
    if file.size is not None and file.size > limit:
        raise TooLargeError(f"{name!r} is larger than {limit // (1024 * 1024)} MiB")
    path = store.incoming(suffix)
    size = 0
    try:
        with open(path, "wb") as out:
            while chunk := file.file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLargeError(f"{name!r} is larger than {limit // (1024 * 1024)} MiB")
                out.write(chunk)
    except BaseException:
        store.discard(path)
        raise
    if size == 0:
        store.discard(path)
        raise InvalidError(f"{name!r} is empty")
    return name, path


UploadTitle = Annotated[str, Form(min_length=1, max_length=200, examples=["Bản tin sáng"])]
UploadClass = Annotated[ml.ItemClass, Form(alias="class")]
UploadLevel = Annotated[ml.ItemLevel | None, Form(description="Default: your issuing level")]
UploadZone = Annotated[str | None, Form(pattern=m.CODE_PATTERN, max_length=64,
                                        description="Owner zone; default: your scope")]


@router.get("/api/v1/library", response_model=ml.LibraryPage, **guard("library.read"))
def list_items(*, cp: CP, caller: Caller, kind: ml.ItemKind | None = None, state: ml.ItemState | None = None,
               class_: Annotated[ml.ItemClass | None, Query(alias="class")] = None, level: ml.ItemLevel | None = None,
               zone: Annotated[str | None, Query(pattern=m.CODE_PATTERN)] = None,
               author: Annotated[str | None, Query(max_length=100)] = None,
               q: Annotated[str | None, Query(max_length=200)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> ml.LibraryPage:
    """Items I can see (my scope's and those issued above it), newest first; ``zone`` keeps those owned in that
    zone's subtree, ``state`` e.g. ``submitted`` lists what awaits approval."""
    with cp.db.read() as conn:
        if zone is not None:
            zones.get(conn, zone)
        found = library.list_items(conn, visible_to=caller.scope, kind=kind, state=state,
                                   cls=library.class_of(class_) if class_ else None,
                                   lvl=library.level_of(level) if level else None, zone=zone, author=author, q=q,
                                   after=decode_cursor(cursor, int), limit=limit + 1)
    return _page(found, limit)


@router.post("/api/v1/library/audio", status_code=201, response_model=ml.LibraryItem, **guard("library.write"))
def upload_audio(*, cp: CP, caller: Caller, source: Source,
                 file: Annotated[UploadFile, File(description="Audio in any format ffmpeg reads (mp3, wav, ogg...)")],
                 title: UploadTitle, class_: UploadClass = "normal", level: UploadLevel = None,
                 zone: UploadZone = None) -> ml.LibraryItem:
    """Upload audio: it is normalised to -16 LUFS, encoded and stored as Ogg Opus (deduplicated by content), and
    becomes a draft item. A file that is not audio, or is corrupt, is refused (422, naming it)."""
    store = store_of(cp)
    with cp.db.read() as conn:
        owner, lvl = _owner(conn, caller, zone, zone is not None, level)
    name, received = _receive(cp, file, store, ".upload")
    try:
        stored = media.ingest_audio(store, received, name)
    finally:
        store.discard(received)
    with cp.db.write() as tx:
        item = library.create(tx, actor(caller, source), kind="audio", title=title, cls=library.class_of(class_),
                              lvl=lvl, zone=owner, content=stored, original_name=name)
    return ml.LibraryItem.of(item)


@router.post("/api/v1/library/images", status_code=201, response_model=ml.LibraryItem, **guard("library.write"))
def upload_image(*, cp: CP, caller: Caller, source: Source,
                 file: Annotated[UploadFile, File(description="A PNG or JPEG image for e-boards")],
                 title: UploadTitle, class_: UploadClass = "normal", level: UploadLevel = None,
                 zone: UploadZone = None) -> ml.LibraryItem:
    """Upload an e-board image (PNG or JPEG, stored as sent); a corrupt or other file is refused (422)."""
    store = store_of(cp)
    with cp.db.read() as conn:
        owner, lvl = _owner(conn, caller, zone, zone is not None, level)
    name, received = _receive(cp, file, store, ".upload")
    try:
        blob = received.read_bytes()
    finally:
        store.discard(received)
    stored = media.store_image(store, blob, name)
    with cp.db.write() as tx:
        item = library.create(tx, actor(caller, source), kind="image", title=title, cls=library.class_of(class_),
                              lvl=lvl, zone=owner, content=stored, original_name=name)
    return ml.LibraryItem.of(item)


@router.post("/api/v1/library/texts", status_code=201, response_model=ml.LibraryItem, **guard("library.write"))
def create_text(body: ml.TextCreate, cp: CP, caller: Caller, source: Source) -> ml.LibraryItem:
    """An e-board text (Vietnamese with full diacritics; stored in Unicode NFC) as a draft item."""
    with cp.db.write() as tx:
        owner, lvl = _owner(tx.conn, caller, body.zone, "zone" in body.model_fields_set, body.level)
        item = library.create(tx, actor(caller, source), kind="text", title=body.title,
                              cls=library.class_of(body.class_), lvl=lvl, zone=owner, text=body.text,
                              store=store_of(cp))
    return ml.LibraryItem.of(item)


@router.get("/api/v1/library/{item_id}", response_model=ml.LibraryItem, **guard("library.read"))
def get_item(item_id: ItemPath, cp: CP, caller: Caller) -> ml.LibraryItem:
    with cp.db.read() as conn:
        item = library.get(conn, item_id)
        library.require_visible(conn, caller, item)
    return ml.LibraryItem.of(item)


@router.patch("/api/v1/library/{item_id}", response_model=ml.LibraryItem, **guard("library.write"))
def patch_item(item_id: ItemPath, body: ml.ItemPatch, cp: CP, caller: Caller, source: Source) -> ml.LibraryItem:
    """Change title, class, level, owner zone (null, given explicitly: national) or text. Any change returns
    the item to draft: it must be submitted and approved again."""
    given = body.model_fields_set
    with cp.db.write() as tx:
        item = library.get(tx.conn, item_id)
        auth.require_zone(tx.conn, caller, item.zone)
        if "zone" in given:
            auth.require_zone(tx.conn, caller, body.zone)
        lvl = None
        if body.level is not None:
            _, lvl = _owner(tx.conn, caller, item.zone, True, body.level)
        item = library.edit(tx, actor(caller, source), item_id, title=body.title,
                            cls=library.class_of(body.class_) if body.class_ else None, lvl=lvl, zone=body.zone,
                            move="zone" in given, text=body.text, store=store_of(cp))
    return ml.LibraryItem.of(item)


@router.delete("/api/v1/library/{item_id}", status_code=204, response_class=Response, **guard("library.write"))
def delete_item(item_id: ItemPath, cp: CP, caller: Caller, source: Source) -> Response:
    """Delete an item that no schedule entry or playlist uses (409 lists them otherwise)."""
    with cp.db.write() as tx:
        item = library.get(tx.conn, item_id)
        auth.require_zone(tx.conn, caller, item.zone)
        library.delete_item(tx, actor(caller, source), item_id)
    return Response(status_code=204)


@router.get("/api/v1/library/{item_id}/content", response_class=FileResponse, **guard("library.read"),
            responses={200: {"description": "The stored file",
                             "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                         for t in CONTENT_TYPES}}})
def get_content(item_id: ItemPath, cp: CP, caller: Caller) -> FileResponse:
    """The item's stored file: Ogg Opus audio, the image, or the UTF-8 text (a playlist has none: 404)."""
    with cp.db.read() as conn:
        item = library.get(conn, item_id)
        library.require_visible(conn, caller, item)
    if item.content is None:
        raise NotFoundError(f"library item {item_id} is a playlist: it has no file of its own")
    path = store_of(cp).path(item.content.sha256, item.content.media_type)
    if not path.is_file():
        raise NotFoundError(f"the file of library item {item_id} is missing from the content store")
    media_type = "text/plain; charset=utf-8" if item.content.media_type == "text/plain" else item.content.media_type
    return FileResponse(path, media_type=media_type, headers={"ETag": f'"{item.content.sha256}"'})


def _transition(cp: CP, caller: Caller, source: Source, item_id: int, event: str, *,
                reason: str | None = None) -> ml.LibraryItem:
    with cp.db.write() as tx:
        item = library.get(tx.conn, item_id)
        auth.require_zone(tx.conn, caller, item.zone)
        item = approval.transition(tx, actor(caller, source), item_id, event, reason=reason)
    return ml.LibraryItem.of(item)


@router.post("/api/v1/library/{item_id}/submit", response_model=ml.LibraryItem, **guard("library.write"))
def submit_item(item_id: ItemPath, cp: CP, caller: Caller, source: Source) -> ml.LibraryItem:
    """Submit a draft (or rejected) item for approval (409 in any other state)."""
    return _transition(cp, caller, source, item_id, "submit")


@router.post("/api/v1/library/{item_id}/approve", response_model=ml.LibraryItem, **guard("library.approve"))
def approve_item(item_id: ItemPath, cp: CP, caller: Caller, source: Source) -> ml.LibraryItem:
    """Approve a submitted item; never your own (403)."""
    return _transition(cp, caller, source, item_id, "approve")


@router.post("/api/v1/library/{item_id}/reject", response_model=ml.LibraryItem, **guard("library.approve"))
def reject_item(item_id: ItemPath, body: ml.Rejection, cp: CP, caller: Caller, source: Source) -> ml.LibraryItem:
    """Reject a submitted item with a reason; never your own (403)."""
    return _transition(cp, caller, source, item_id, "reject", reason=body.reason)


# -- playlists ---------------------------------------------------------------------------------------------------

def _check_members(conn: Connection, caller: auth.Principal, members: list[int]) -> None:
    found = library.get_many(conn, members)
    for member in members:
        if member in found:
            library.require_visible(conn, caller, found[member])


@router.get("/api/v1/playlists", response_model=ml.LibraryPage, **guard("library.read"))
def list_playlists(*, cp: CP, caller: Caller, state: ml.ItemState | None = None,
                   zone: Annotated[str | None, Query(pattern=m.CODE_PATTERN)] = None,
                   q: Annotated[str | None, Query(max_length=200)] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> ml.LibraryPage:
    """Playlists I can see, newest first."""
    with cp.db.read() as conn:
        if zone is not None:
            zones.get(conn, zone)
        found = library.list_items(conn, visible_to=caller.scope, kind="playlist", state=state, zone=zone, q=q,
                                   after=decode_cursor(cursor, int), limit=limit + 1)
    return _page(found, limit)


@router.post("/api/v1/playlists", status_code=201, response_model=ml.LibraryItem, **guard("library.write"))
def create_playlist(body: ml.PlaylistCreate, cp: CP, caller: Caller, source: Source) -> ml.LibraryItem:
    """A playlist of audio items I can see, played in order; a library item of kind ``playlist`` (submitted and
    approved through /api/v1/library/{id}/...; it can be approved once all its items are)."""
    with cp.db.write() as tx:
        owner, lvl = _owner(tx.conn, caller, body.zone, "zone" in body.model_fields_set, body.level)
        _check_members(tx.conn, caller, body.items)
        item = library.create(tx, actor(caller, source), kind="playlist", title=body.title,
                              cls=library.class_of(body.class_), lvl=lvl, zone=owner, members=body.items)
    return ml.LibraryItem.of(item)


@router.get("/api/v1/playlists/{playlist_id}", response_model=ml.LibraryItem, **guard("library.read"))
def get_playlist(playlist_id: ItemPath, cp: CP, caller: Caller) -> ml.LibraryItem:
    with cp.db.read() as conn:
        item = library.get(conn, playlist_id)
        if item.kind != "playlist":
            raise NotFoundError(f"library item {playlist_id} is not a playlist")
        library.require_visible(conn, caller, item)
    return ml.LibraryItem.of(item)


@router.patch("/api/v1/playlists/{playlist_id}", response_model=ml.LibraryItem, **guard("library.write"))
def patch_playlist(playlist_id: ItemPath, body: ml.PlaylistPatch, cp: CP, caller: Caller,
                   source: Source) -> ml.LibraryItem:
    """Rename a playlist or replace its items; any change returns it to draft."""
    with cp.db.write() as tx:
        item = library.get(tx.conn, playlist_id)
        if item.kind != "playlist":
            raise NotFoundError(f"library item {playlist_id} is not a playlist")
        auth.require_zone(tx.conn, caller, item.zone)
        if body.items is not None:
            _check_members(tx.conn, caller, body.items)
        item = library.edit(tx, actor(caller, source), playlist_id, title=body.title, members=body.items)
    return ml.LibraryItem.of(item)
