"""/api/v1/broadcasts: the broadcast log (scheduled, live, relayed, alerts), and live broadcasts and relays
started and stopped by operators (see :mod:`loa.control_plane.broadcasts`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, model_validator

from loa.control_plane import broadcasts, levels
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, Source, decode_cursor, encode_cursor, guard
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.library import CLASSES

router = APIRouter(prefix="/api/v1/broadcasts", tags=["broadcasts"], responses=PROBLEM_RESPONSES)
Bid = Annotated[int, Path(ge=0, le=2**32 - 1)]
BroadcastKind = Literal["alert", "live", "scheduled", "relay"]


class BroadcastStart(m.Strict):
    zones: Annotated[list[m.Code], Field(min_length=1, max_length=broadcasts.MAX_ZONES,
                                         description="Target zones (each with every zone below it), in my scope")]
    title: Annotated[str, Field(min_length=1, max_length=200, examples=["Thông báo của UBND xã"])]
    cls: Literal["normal", "priority"] = Field("normal", alias="class")
    policy: Literal["resume", "drop"] = Field("resume", description="What a broadcast of higher rank does to "
                                                                  "this one: pause it (resume) or end it (drop)")
    port: Annotated[int | None, Field(ge=0, le=65_535, description="Live: the UDP port to receive RTP/Opus on "
                                                                   "(0: any free port, returned)")] = None
    url: Annotated[str | None, Field(min_length=1, max_length=broadcasts.MAX_URL,
                                     description="Relay: a stream URL (http, https, rtsp, rtp, udp, tcp, hls)",
                                     examples=["http://radio.example.vn/live.mp3"])] = None

    @model_validator(mode="after")
    def _one_source(self) -> BroadcastStart:
        if (self.port is None) == (self.url is None):
            raise ValueError("give either port (a live RTP input) or url (a stream to relay)")
        return self


class BroadcastOut(BaseModel):
    bid: int
    kind: BroadcastKind
    title: str
    zones: list[str]
    cls: Literal["normal", "priority", "emergency"] = Field(alias="class")
    level: Literal["commune", "district", "province", "national"]
    content_id: str | None
    alert_id: int | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    listen: str | None = Field(None, description="Live: where to send the RTP/Opus stream (HOST:PORT)")

    @classmethod
    def of(cls, record: broadcasts.BroadcastRecord, listen: tuple[str, int] | None = None) -> BroadcastOut:
        return cls.model_validate({
            "bid": record.bid, "kind": record.kind, "title": record.title, "zones": list(record.zones),
            "class": CLASSES[record.cls] if 0 <= record.cls < len(CLASSES) else "normal",
            "level": levels.LEVEL_NAMES[record.lvl] if 0 <= record.lvl < len(levels.LEVEL_NAMES) else "commune",
            "content_id": record.content_id, "alert_id": record.alert_id, "started_at": record.started_at,
            "ended_at": record.ended_at, "end_reason": record.end_reason,
            "listen": f"{listen[0]}:{listen[1]}" if listen else None})


class BroadcastPage(BaseModel):
    items: list[BroadcastOut]
    next_cursor: str | None


@router.get("", response_model=BroadcastPage, response_model_by_alias=True, **guard("broadcasts.read"))
def list_broadcasts(*, cp: CP, caller: Caller, active: bool | None = None, kind: BroadcastKind | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None) -> BroadcastPage:
    """Broadcasts in or above my scope, newest first; ``active=true``: those running now."""
    before = decode_cursor(cursor, int)
    with cp.db.read() as conn:
        found = broadcasts.list_broadcasts(conn, caller, active=active, kind=kind, before=before, limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return BroadcastPage(items=[BroadcastOut.of(r) for r in found],
                         next_cursor=encode_cursor(found[-1].id) if more and found else None)


@router.get("/{bid}", response_model=BroadcastOut, response_model_by_alias=True, **guard("broadcasts.read"))
def get_broadcast(bid: Bid, cp: CP, caller: Caller) -> BroadcastOut:
    with cp.db.read() as conn:
        return BroadcastOut.of(broadcasts.get(conn, caller, bid))


@router.post("", status_code=201, response_model=BroadcastOut, response_model_by_alias=True,
             **guard("broadcasts.live"))
def start_broadcast(body: BroadcastStart, cp: CP, caller: Caller, source: Source) -> BroadcastOut:
    """Go live to zones of my scope now: from an RTP/Opus input (``port``; send to the returned ``listen``
    address, e.g. ``ffmpeg -re -i mic.wav -c:a libopus -f rtp rtp://HOST:PORT``) or by relaying a stream
    (``url``). 409 when no streamer runs in this process."""
    record, listen = broadcasts.start(cp.db, caller, source, cp.live, zone_codes=body.zones, title=body.title,
                                      cls=body.cls, policy=body.policy, port=body.port, url=body.url)
    return BroadcastOut.of(record, listen)


@router.post("/{bid}/stop", response_model=BroadcastOut, response_model_by_alias=True,
             **guard("broadcasts.live"))
def stop_broadcast(bid: Bid, cp: CP, caller: Caller, source: Source) -> BroadcastOut:
    """Stop a running live, relayed or scheduled broadcast in my scope (an alert ends by its signed cancel)."""
    return BroadcastOut.of(broadcasts.stop(cp.db, caller, source, cp.live, bid))
