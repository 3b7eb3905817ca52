"""`loa admin library` and `loa admin playlists`: audio, e-board texts and images, playlists of audio items;
their approval (submit, approve, reject; never one's own).

Uploads are read from a local file and sent as they are (the server normalises audio); a file that cannot be
read is one line and exit 1, as is any API error.
"""

from __future__ import annotations

import mimetypes
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from loa.control_plane.admin_client import CLASSES, LEVELS, api_of, cell, fields, present, show, stacked, tsv

__all__ = ["library", "playlists"]

_ITEM_TIMES = ("reviewed_at", "created_at", "updated_at")
_owner_options = stacked([
    click.option("--class", "cls", type=click.Choice(CLASSES), help="Default: normal."),
    click.option("--level", type=click.Choice(LEVELS), help="Issuing level (default: yours)."),
    click.option("--zone", help="Owner zone (default: your scope)."),
])


def _item_row(item: Mapping[str, Any]) -> str:
    duration = f"{item['duration_ms'] / 1000:.1f}s" if item.get("duration_ms") else "-"
    return tsv(item["id"], item["kind"], item["state"], item["class"], item["level"], item["zone"] or "national",
               duration, cell(item["title"]))


@click.group()
def library() -> None:
    """Library items: audio, e-board texts and images; submit, approve, reject."""


@library.command("list")
@click.option("--kind", type=click.Choice(["audio", "text", "image", "playlist"]))
@click.option("--state", type=click.Choice(["draft", "submitted", "approved", "rejected"]))
@click.option("--class", "cls", type=click.Choice(CLASSES))
@click.option("--level", type=click.Choice(LEVELS))
@click.option("--zone", help="Only items owned in this zone's subtree.")
@click.option("--author")
@click.option("--search", "q", help="Search titles.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def library_list(ctx: click.Context, *, kind: str | None, state: str | None, cls: str | None, level: str | None,
                 zone: str | None, author: str | None, q: str | None, limit: int) -> None:
    """Items I can see, newest first: id, kind, state, class, level, zone, duration, title."""
    params = present(kind=kind, state=state, level=level, zone=zone, author=author, q=q, **{"class": cls})
    items = list(api_of(ctx).pages("/api/v1/library", params, limit))
    show(ctx, items, "\n".join(_item_row(i) for i in items))


@library.command("show")
@click.argument("item_id", type=int)
@click.pass_context
def library_show(ctx: click.Context, item_id: int) -> None:
    item = api_of(ctx).call("GET", f"/api/v1/library/{item_id}")
    show(ctx, item, fields(item, times=_ITEM_TIMES))


def _upload_command(name: str, route: str, doc: str) -> click.Command:
    """``loa admin library NAME FILE``: FILE posted to ``route`` as a new draft item."""

    @library.command(name, help=doc)
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--title", help="Default: the file name without its extension.")
    @_owner_options
    @click.pass_context
    def upload(ctx: click.Context, *, file: Path, title: str | None, cls: str | None, level: str | None,
               zone: str | None) -> None:
        form = present(title=title or file.stem, level=level, zone=zone, **{"class": cls})
        media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        try:
            handle = file.open("rb")
        except OSError as exc:
            raise click.ClickException(f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
        with handle:
            item = api_of(ctx).call("POST", route, files={"file": (file.name, handle, media_type)}, data=form)
        show(ctx, item, _item_row(item))

    return upload


library_upload = _upload_command(
    "upload", "/api/v1/library/audio",
    "Upload audio (any format ffmpeg reads): normalised, stored as Ogg Opus, a new draft item.")
library_image = _upload_command(
    "image", "/api/v1/library/images", "Upload an e-board image (PNG or JPEG) as a new draft item.")


@library.command("text")
@click.argument("title")
@click.argument("text")
@_owner_options
@click.pass_context
def library_text(ctx: click.Context, *, title: str, text: str, cls: str | None, level: str | None,
                 zone: str | None) -> None:
    """A new draft e-board text; TEXT ``-`` reads it from standard input."""
    if text == "-":
        text = sys.stdin.read()
    item = api_of(ctx).call("POST", "/api/v1/library/texts",
                            json=present(title=title, text=text, level=level, zone=zone, **{"class": cls}))
    show(ctx, item, _item_row(item))


def _library_step(ctx: click.Context, item_id: int, step: str, body: dict[str, Any] | None = None) -> None:
    item = api_of(ctx).call("POST", f"/api/v1/library/{item_id}/{step}", json=body)
    show(ctx, item, _item_row(item))


def _step_command(step: str, doc: str) -> click.Command:
    """``loa admin library STEP ITEM_ID``: one step of the approval."""

    @library.command(step, help=doc)
    @click.argument("item_id", type=int)
    @click.pass_context
    def command(ctx: click.Context, item_id: int) -> None:
        _library_step(ctx, item_id, step)

    return command


library_submit = _step_command("submit", "Submit a draft (or rejected) item for approval.")
library_approve = _step_command("approve", "Approve a submitted item (never one's own).")


@library.command("reject")
@click.argument("item_id", type=int)
@click.option("--reason", required=True, help="Why: the author sees it.")
@click.pass_context
def library_reject(ctx: click.Context, item_id: int, reason: str) -> None:
    """Reject a submitted item with a reason (never one's own)."""
    _library_step(ctx, item_id, "reject", {"reason": reason})


@library.command("delete")
@click.argument("item_id", type=int)
@click.pass_context
def library_delete(ctx: click.Context, item_id: int) -> None:
    """Delete an item no schedule entry or playlist uses."""
    api_of(ctx).call("DELETE", f"/api/v1/library/{item_id}")
    show(ctx, {"deleted": item_id}, f"deleted library item {item_id}")


@click.group()
def playlists() -> None:
    """Playlists: ordered audio items, approved like any library item."""


@playlists.command("create")
@click.argument("title")
@click.argument("items", nargs=-1, required=True, type=int)
@_owner_options
@click.pass_context
def playlists_create(ctx: click.Context, *, title: str, items: tuple[int, ...], cls: str | None, level: str | None,
                     zone: str | None) -> None:
    """A draft playlist of audio ITEMS (ids), played in the order given."""
    item = api_of(ctx).call("POST", "/api/v1/playlists", json=present(title=title, items=list(items), level=level,
                                                                       zone=zone, **{"class": cls}))
    show(ctx, item, _item_row(item))


@playlists.command("list")
@click.option("--state", type=click.Choice(["draft", "submitted", "approved", "rejected"]))
@click.option("--zone", help="Only playlists owned in this zone's subtree.")
@click.option("--search", "q", help="Search titles.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def playlists_list(ctx: click.Context, state: str | None, zone: str | None, q: str | None, limit: int) -> None:
    """Playlists I can see, newest first: the library row, then its member ids."""
    items = list(api_of(ctx).pages("/api/v1/playlists", present(state=state, zone=zone, q=q), limit))
    show(ctx, items, "\n".join(tsv(_item_row(i), cell(i["members"])) for i in items))
