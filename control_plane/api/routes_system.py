"""Health, metrics and the live event stream (Server-Sent Events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import loa
from loa.control_plane import auth, users
from loa.control_plane.api import models as m
from loa.control_plane.api.deps import CP, Caller, guard, public
from loa.control_plane.api.problems import PROBLEM_RESPONSES
from loa.control_plane.events import Event, Overflow

router = APIRouter(responses=PROBLEM_RESPONSES)
TOPICS = ("audit", "device.status", "alert", "library.item", "schedule.entry", "schedule.firing")
TopicList = Annotated[str | None, Query(max_length=200, pattern=r"^[a-z.]+(,[a-z.]+)*$",
                                        description=f"Comma-separated topics, of: {', '.join(TOPICS)}")]


@router.get("/healthz", response_model=m.Health, tags=["system"], **public())
def healthz(cp: CP) -> m.Health:
    """200 when the database answers; 503 (problem) when it does not."""
    with cp.db.read() as conn:
        revision = MigrationContext.configure(conn).get_current_revision() or ""
    return m.Health(status="ok", version=loa.__version__, database=cp.db.dialect, schema_revision=revision)


@router.get("/metrics", response_class=Response, tags=["system"],
            responses={200: {"description": "Prometheus text exposition format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}}, **public())
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _frame(event: str, data: object, ident: str | None = None) -> str:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@router.get("/events", tags=["events"], response_class=StreamingResponse,
            responses={200: {"description": "A text/event-stream: `audit`, `device.status`, `alert`, `overflow` events",
                             "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            **guard("events.read"))
async def events(request: Request, cp: CP, caller: Caller, topics: TopicList = None,
                 last_event_id: Annotated[str | None, Header(max_length=64)] = None) -> StreamingResponse:
    """Live changes in my scope, as Server-Sent Events. Each event's ``id`` may be sent back as
    ``Last-Event-ID`` on reconnection to receive what was missed (while the server still holds it); an
    ``overflow`` event says events were lost and the client should re-read what it shows. The token is checked
    again at every keep-alive: the stream ends (``end`` event) once it is revoked or the user's rights change."""
    wanted = set(topics.split(",")) if topics else set(TOPICS)
    token = (request.headers.get("authorization") or "").partition(" ")[2].strip()

    def accept(event: Event) -> bool:
        if event.topic not in wanted or not auth.can(caller, event.permission):
            return False
        return caller.scope is None or (event.zones is not None and caller.scope in event.zones)

    after, resumed = None, last_event_id is None
    if last_event_id is not None:
        epoch, _, number = last_event_id.partition(".")
        if epoch == cp.bus.epoch and number.isdigit():
            after, resumed = int(number), True

    async def stream() -> AsyncIterator[str]:
        with cp.bus.subscribe(accept, after=after) as subscription:
            yield "retry: 3000\n\n"
            if not resumed:
                yield _frame("overflow", {"lost": None})
            while True:
                with anyio.move_on_after(cp.settings.sse_ping_s) as timer:
                    item = await subscription.next()
                if timer.cancelled_caught:
                    principal = await anyio.to_thread.run_sync(users.resolve_token, cp.db, token)
                    if principal is None:
                        yield _frame("end", {"reason": "the token is no longer valid"})
                        return
                    if (principal.role, principal.scope) != (caller.role, caller.scope):
                        yield _frame("end", {"reason": "your role or scope changed: reconnect"})
                        return
                    yield ": ping\n\n"
                elif isinstance(item, Overflow):
                    yield _frame("overflow", {"lost": item.lost})
                else:
                    yield _frame(item.event.topic, dict(item.event.data), f"{cp.bus.epoch}.{item.id}")

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
