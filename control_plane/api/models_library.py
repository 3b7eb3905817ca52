"""Request and response bodies of the library, approval and playlist routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from loa.control_plane import library as lib
from loa.control_plane.api.models import Code, Name, Strict
from loa.control_plane.approval import MAX_REASON
from loa.control_plane.media import MAX_TEXT

ItemKind = Literal["audio", "text", "image", "playlist"]
ItemState = Literal["draft", "submitted", "approved", "rejected"]
ItemClass = Literal["normal", "priority", "emergency"]
ItemLevel = Literal["commune", "district", "province", "national"]
ItemId = Annotated[int, Field(ge=1, le=2**31 - 1)]
BoardText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT * 2,
                                 examples=["Thông báo: lịch tiêm chủng mở rộng tại trạm y tế xã vào sáng thứ Bảy."])]


class LibraryItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    kind: ItemKind
    title: str
    class_: ItemClass = Field(alias="class")
    level: ItemLevel
    zone: str | None = Field(description="Owner zone; null: national")
    author: str
    state: ItemState
    version: int = Field(description="Increases with every change; an approval covers one version")
    content_id: str | None = Field(description="SHA-256 of the stored file (Ogg Opus, PNG, JPEG or UTF-8 text)")
    media_type: str | None
    size_bytes: int | None
    duration_ms: int | None = Field(description="Audio length (a playlist: its members' total)")
    loudness_lufs: float | None = Field(description="Integrated loudness of the upload before normalisation")
    gain_db: float | None = Field(description="Gain applied to reach the target loudness (-16 LUFS)")
    width: int | None
    height: int | None
    text: str | None
    original_name: str
    members: list[int] = Field(description="A playlist's audio items, in playing order")
    reviewed_by: str | None
    reviewed_at: datetime | None
    reason: str | None = Field(description="Why it was rejected")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, item: lib.ItemRecord) -> LibraryItem:
        c = item.content
        return cls.model_validate({
            "id": item.id, "kind": item.kind, "title": item.title, "class": item.class_name,
            "level": item.level_name, "zone": item.zone, "author": item.author, "state": item.state,
            "version": item.version, "content_id": c.sha256 if c else None, "media_type": c.media_type if c else None,
            "size_bytes": c.size_bytes if c else None, "duration_ms": item.duration_ms,
            "loudness_lufs": c.loudness_lufs if c else None, "gain_db": c.gain_db if c else None,
            "width": c.width if c else None, "height": c.height if c else None, "text": item.text,
            "original_name": item.original_name, "members": list(item.members), "reviewed_by": item.reviewed_by,
            "reviewed_at": item.reviewed_at, "reason": item.reason, "created_at": item.created_at,
            "updated_at": item.updated_at})


class LibraryPage(BaseModel):
    items: list[LibraryItem]
    next_cursor: str | None


class TextCreate(Strict):
    title: Name
    text: BoardText
    class_: ItemClass = Field("normal", alias="class")
    level: ItemLevel | None = Field(None, description="Default: your issuing level")
    zone: Code | None = Field(None, description="Owner zone; default: your scope")


class ItemPatch(Strict):
    title: Name | None = None
    class_: ItemClass | None = Field(None, alias="class")
    level: ItemLevel | None = None
    zone: Code | None = Field(None, description="Move to this zone; null (explicitly) for national")
    text: BoardText | None = Field(None, description="Text items only")


class Rejection(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON)]


class PlaylistCreate(Strict):
    title: Name
    items: Annotated[list[ItemId], Field(min_length=1, max_length=lib.MAX_MEMBERS)]
    class_: ItemClass = Field("normal", alias="class")
    level: ItemLevel | None = Field(None, description="Default: your issuing level")
    zone: Code | None = Field(None, description="Owner zone; default: your scope")


class PlaylistPatch(Strict):
    title: Name | None = None
    items: Annotated[list[ItemId] | None, Field(min_length=1, max_length=lib.MAX_MEMBERS)] = None

