"""The event bus (trio and asyncio, publishers on any thread) and the /events Server-Sent Events stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from loa.control_plane import devices
from loa.control_plane.api import create_app
from loa.control_plane.auth import Actor
from loa.control_plane.events import Event, EventBus, Overflow, Published
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, bearer, fast_settings, stream_request

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _event(n: int, zones: tuple[str, ...] | None = ("48",)) -> Event:
    return Event("device.status", {"n": n}, permission="devices.read", zones=zones)


async def test_events_from_other_threads_arrive_in_order() -> None:
    bus = EventBus()
    with bus.subscribe() as subscription:
        thread = threading.Thread(target=lambda: [bus.publish([_event(i)]) for i in range(50)])
        thread.start()
        got = []
        with anyio.fail_after(5):
            while len(got) < 50:
                item = await subscription.next()
                assert isinstance(item, Published)
                got.append(item.event.data["n"])
        thread.join()
    assert got == list(range(50))
    assert bus.statistics().subscribers == 0


async def test_filter_overflow_and_resume() -> None:
    bus = EventBus(history=100, queue_size=5)
    with bus.subscribe(lambda e: e.data["n"] % 2 == 0) as evens:
        bus.publish(_event(i) for i in range(20))
        first = await evens.next()
        assert first == Overflow(5)  # 10 even events, 5 fit
        rest = [await evens.next() for _ in range(5)]
        assert [r.event.data["n"] for r in rest if isinstance(r, Published)] == [10, 12, 14, 16, 18]
    last_seen = 15
    with bus.subscribe(after=last_seen) as resumed:
        items = [await resumed.next() for _ in range(5)]
    assert [i.id for i in items if isinstance(i, Published)] == [16, 17, 18, 19, 20]
    bus2 = EventBus(history=3)
    bus2.publish(_event(i) for i in range(10))
    with bus2.subscribe(after=2) as late:
        assert await late.next() == Overflow(5)   # ids 3..7 are gone
        assert isinstance(await late.next(), Published)
    assert bus.statistics().dropped == 5


async def test_cancelled_waits_lose_nothing() -> None:
    bus = EventBus()
    with bus.subscribe() as subscription:
        with anyio.move_on_after(0.01):
            await subscription.next()
        bus.publish([_event(1)])
        with anyio.fail_after(2):
            item = await subscription.next()
    assert isinstance(item, Published)


def test_a_subscription_whose_loop_ended_is_dropped() -> None:
    bus = EventBus()
    holder: list[Any] = []

    async def subscribe_and_leave() -> None:
        subscription = bus.subscribe()
        holder.append(subscription)
        with anyio.move_on_after(0.01):
            await subscription.next()

    anyio.run(subscribe_and_leave, backend="trio")
    bus.publish([_event(1)])  # wakes a loop that is gone: must not raise
    bus.publish([_event(2)])
    assert holder[0].closed
    assert bus.statistics().subscribers == 0


# -- the /events stream -----------------------------------------------------------------------------------------

@pytest.fixture
def plane(tmp_path: Any) -> ControlPlane:
    plane = ControlPlane(fast_settings(tmp_path, None, sse_ping_s=0.2))
    Seed(plane).province()
    yield plane  # type: ignore[misc]
    plane.close()


def _frames(text: str) -> list[dict[str, str]]:
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key and not key.startswith(":"):
                fields[key] = value
        if "event" in fields:
            frames.append(fields)
    return frames


async def _listen(app: Any, headers: dict[str, str], action: Callable[[], None], want: int,
                  path: str = "/events") -> list[dict[str, str]]:
    """Open the stream, run ``action`` in a thread once it is open, collect until ``want`` events came."""
    chunks: list[str] = []
    disconnect = anyio.Event()
    opened = anyio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        if not opened.is_set():
            opened.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message.get("body"):
            chunks.append(message["body"].decode())
            if len([f for f in _frames("".join(chunks)) if f["event"] != "overflow"]) >= want:
                disconnect.set()
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            disconnect.set()

    raw, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.1"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": raw, "raw_path": raw.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 1), "server": ("test", 80), "state": {}}

    async def act() -> None:
        while not chunks:
            await anyio.sleep(0.005)
        await anyio.to_thread.run_sync(action)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(act)
            await app(scope, receive, send)
    assert status == 200
    return _frames("".join(chunks))


async def test_the_stream_carries_changes_in_scope_only(plane: ControlPlane) -> None:
    seed = Seed(plane)
    app = create_app(control_plane=plane)
    inside, outside = seed.device("20194-01"), seed.device("20227-01")
    admin, scoped = bearer(seed.user("root", "admin")), bearer(seed.user("lan", "viewer", "490"))

    def change() -> None:
        with plane.db.write() as tx:
            devices.record_status(tx, outside, online=True)
        with plane.db.write() as tx:
            devices.record_status(tx, inside, online=True, status={"faults": ["line_open"]})

    frames = await _listen(app, scoped, change, want=1)
    assert [(f["event"], json.loads(f["data"])["device"]) for f in frames if f["event"] != "overflow"] == [
        ("device.status", inside)]
    frame = next(f for f in frames if f["event"] == "device.status")
    assert json.loads(frame["data"])["faults"] == ["line_open"]
    assert frame["id"].startswith(plane.bus.epoch + ".")

    def audited_change() -> None:
        with plane.db.write() as tx:
            devices.rename(tx, Actor("root"), inside, "Loa chợ")

    frames = await _listen(app, admin, audited_change, want=1, path="/events?topics=audit")
    [audit_frame] = [f for f in frames if f["event"] == "audit"]
    assert json.loads(audit_frame["data"])["action"] == "device.rename"


def test_resume_with_last_event_id_and_bad_tokens(plane: ControlPlane) -> None:
    seed = Seed(plane)
    app = create_app(control_plane=plane)
    admin = bearer(seed.user("root", "admin"))
    start = plane.bus.last_id
    for name in ("a", "b"):
        seed.device("20194-01", name=name)   # two audit events while nobody listens
    status, headers, body = stream_request(app, "/events?topics=audit",
                                           {**admin, "Last-Event-ID": f"{plane.bus.epoch}.{start}"}, chunks=3)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    frames = _frames(body)
    assert [f["event"] for f in frames] == ["audit", "audit"]
    status, _, body = stream_request(app, "/events", {**admin, "Last-Event-ID": "other-process.5"}, chunks=2)
    assert _frames(body)[0] == {"event": "overflow", "data": '{"lost":null}'}
    assert stream_request(app, "/events", bearer("loa_nope"))[0] == 401
    assert stream_request(app, "/events?topics=NOPE!", admin)[0] == 422


def test_the_stream_ends_when_the_token_is_revoked(plane: ControlPlane) -> None:
    seed = Seed(plane)
    app = create_app(control_plane=plane)
    token = seed.user("root", "admin")
    with TestClient(app) as client:
        assert client.post("/api/v1/auth/logout", headers=bearer(token)).status_code == 204
    # The token was valid when... it is not now: the stream refuses at once.
    assert stream_request(app, "/events", bearer(token))[0] == 401
    live = seed.token("root")

    async def revoke_later() -> tuple[int, dict[str, str], str]:
        import loa.control_plane.testing as testing

        async def revoke() -> None:
            await anyio.sleep(0.05)
            with TestClient(app) as c:
                await anyio.to_thread.run_sync(lambda: c.post("/api/v1/auth/logout", headers=bearer(live)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(revoke)
            return await testing._stream_once(app, "/events", bearer(live), 99, 10.0)

    status, _, body = anyio.run(revoke_later)
    assert status == 200
    assert _frames(body)[-1]["event"] == "end"
