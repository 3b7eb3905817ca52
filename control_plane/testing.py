"""Helpers for tests and benchmarks of the control plane: cheap settings, a sample province, direct seeding.

Nothing here is used by the running service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import update

from loa.control_plane import devices, users
from loa.control_plane.auth import Actor
from loa.control_plane.db import Database, Tx
from loa.control_plane.db.schema import users as users_table
from loa.control_plane.settings import ControlPlane, Settings
from loa.control_plane.zone_import import import_csv

__all__ = ["PROVINCE_CSV", "TEST_PASSWORD", "ManualClock", "Seed", "bearer", "fast_settings",
           "write_concurrently"]

PROVINCE_CSV = """code,name,parent,level
48,Thành phố Đà Nẵng,,province
490,Quận Liên Chiểu,48,district
491,Quận Thanh Khê,48,district
20194,Phường Hòa Hiệp Bắc,490,commune
20195,Phường Hòa Hiệp Nam,490,commune
20227,Phường Tam Thuận,491,commune
20194-01,Tổ dân phố 1,20194,hamlet
20194-02,Tổ dân phố 2,20194,hamlet
20227-01,Tổ dân phố 1,20227,hamlet
"""
TEST_PASSWORD = "correct horse battery staple"  # noqa: S105 (a test fixture)


def fast_settings(data_dir: Path, url: str | None = None, **overrides: Any) -> Settings:
    """Settings with cheap Argon2 parameters (never for production)."""
    values: dict[str, Any] = {"data_dir": data_dir, "database_url": url, "argon2_time_cost": 1,
                              "argon2_memory_kib": 256, "argon2_parallelism": 1}
    values.update(overrides)
    return Settings(**values)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ManualClock:
    """A wall clock (the ``clock`` setting) that only moves when told: set :attr:`now`, or :meth:`advance` it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def write_concurrently(db: Database, *, writers: int, each: int, write: Callable[[Tx, int, int], object],
                       timeout: float = 60.0) -> list[BaseException]:
    """``writers`` threads at once, each running ``each`` write transactions ``write(tx, writer, i)`` one after
    the other; returns what they raised (a writer stops at its first error). Each thread is waited on for at most
    ``timeout`` seconds."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(each):
                with db.write() as tx:
                    write(tx, n, i)
        except Exception as exc:  # noqa: BLE001 (returned to the caller, which asserts on it)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return errors


class Seed:
    """Set up a control plane directly (no HTTP): zones, users with tokens, devices."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def province(self, csv_text: str = PROVINCE_CSV) -> None:
        with self.cp.db.write() as tx:
            import_csv(tx, Actor("seed"), csv_text.encode())

    def user(self, username: str, role: str, scope: str | None = None, *, password: str = TEST_PASSWORD,
             must_change: bool = False) -> str:
        """Create a user; returns an API token of theirs."""
        with self.cp.db.write() as tx:
            user, _ = users.create_user(tx, Actor("seed"), self.cp.passwords, username=username, role=role,
                                        scope=scope, password=password)
            if must_change:
                tx.conn.execute(update(users_table).where(users_table.c.id == user.id)
                                .values(must_change_password=True))
            token, _ = users.issue_token(tx, user, kind="api", name="test")
        return token

    def token(self, username: str) -> str:
        with self.cp.db.write() as tx:
            token, _ = users.issue_token(tx, users.get_user(tx.conn, username), kind="api", name="test")
        return token

    def device(self, zone: str | None, *, kind: str = "speaker", name: str = "") -> str:
        key = X25519PrivateKey.generate().public_key().public_bytes_raw()
        with self.cp.db.write() as tx:
            return devices.enrol(tx, Actor("seed"), public_key=key, kind=kind, zone=zone, name=name).id


async def _stream_once(app: Any, path: str, headers: dict[str, str], chunks: int, timeout: float
                       ) -> tuple[int, dict[str, str], str]:
    import anyio

    status, response_headers, body = 0, {}, []
    done = anyio.Event()
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            if message.get("body"):
                body.append(message["body"].decode())
            if len(body) >= chunks or not message.get("more_body", False):
                done.set()

    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.1"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(),
        "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
    }
    with anyio.fail_after(timeout):
        await app(scope, receive, send)
    return status, response_headers, "".join(body)


def stream_request(app: Any, path: str, headers: dict[str, str] | None = None, *, chunks: int = 1,
                   timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
    """GET a streaming endpoint (``/events``) in-process, as hypercorn calls it (ASGI 2.1): read ``chunks``
    body chunks, then disconnect.

    Returns (status, headers, body text). Test clients that buffer whole responses cannot do this.
    """
    import anyio

    return anyio.run(_stream_once, app, path, dict(headers or {}), chunks, timeout)


class FakeDispatcher:
    """An :class:`~loa.control_plane.alerts.AlertDispatcher` that records what it is asked to send.

    ``fail`` makes the next ``trigger`` raise it; ``cancel`` raises ``KeyError`` for a bid it never started, as
    the streamer does.
    """

    def __init__(self, first_bid: int = 1000) -> None:
        import threading

        self._lock = threading.Lock()
        self._next = first_bid
        self.triggered: list[dict[str, Any]] = []
        self.cancelled: list[tuple[int, bytes, bytes]] = []
        self.fail: Exception | None = None

    def allocate_bid(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def trigger(self, body: bytes, sig: bytes, *, zones: Any, audio: Any, preroll_ms: int, text: str | None,
                status: str) -> int:
        from loa.protocol.alert import decode_alert

        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        bid = decode_alert(body).bid
        with self._lock:
            self.triggered.append({"body": body, "sig": sig, "zones": tuple(zones), "audio": audio,
                                   "preroll_ms": preroll_ms, "text": text, "status": status, "bid": bid})
        return bid

    def cancel(self, bid: int, body: bytes, sig: bytes) -> None:
        with self._lock:
            if bid not in {t["bid"] for t in self.triggered}:
                raise KeyError(bid)
            self.cancelled.append((bid, body, sig))


__all__ += ["FakeDispatcher"]


class FakeLive:
    """A :class:`~loa.control_plane.broadcasts.LiveBroadcaster` that logs each broadcast it "starts" the way the
    data plane does (a broadcast log row) and ends it on ``stop_broadcast`` (KeyError if not running)."""

    def __init__(self, cp: ControlPlane, first_bid: int = 50_000) -> None:
        import threading

        self.cp = cp
        self._lock = threading.Lock()
        self._next = first_bid
        self.running: set[int] = set()
        self.started: list[dict[str, Any]] = []

    def start_live(self, source: Any, zones: Any, *, cls: int, lvl: int, policy: str,
                   title: str) -> tuple[int, tuple[str, int] | None]:
        from loa.control_plane import asplayed

        with self._lock:
            self._next += 1
            bid = self._next
            self.running.add(bid)
        with self.cp.db.write() as tx:
            asplayed.broadcast_started(tx, asplayed.BroadcastStart(
                bid=bid, kind="relay" if source.url else "live", zones=tuple(zones), at=tx.now, title=title,
                cls=cls, lvl=lvl))
        self.started.append({"bid": bid, "source": source, "zones": tuple(zones), "cls": cls, "lvl": lvl,
                             "policy": policy, "title": title})
        return bid, (None if source.url else ("127.0.0.1", source.port or 40_000))

    def stop_broadcast(self, bid: int) -> None:
        from loa.control_plane import asplayed

        with self._lock:
            self.running.remove(bid)  # KeyError if not running
        with self.cp.db.write() as tx:
            asplayed.broadcast_ended(tx, bid, at=tx.now, reason="stopped")


__all__ += ["FakeLive"]


# -- library and schedule -----------------------------------------------------------------------------------------


def wav_bytes(seconds: float = 0.5, freq: float = 440.0, *, rate: int = 48_000) -> bytes:
    """A mono 16-bit WAV file of a sine tone (a stand-in for any upload ffmpeg reads)."""
    import io
    import math
    import struct
    import wave

    n = round(seconds * rate)
    frames = b"".join(struct.pack("<h", round(8000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def library_item(cp: ControlPlane, *, zone: str | None, state: str = "approved", kind: str = "text",
                 title: str = "Thông báo", text: str = "Loa phát thanh xã: lịch họp tổ dân phố tối thứ Sáu.",
                 author: str = "seed-editor", reviewer: str = "seed-approver", cls: int = 0, lvl: int = 0,
                 duration_s: float = 1.0) -> int:
    """A library item (text, or audio of a ``duration_s`` tone) brought to ``state`` directly; returns its id."""
    from loa.control_plane import approval, library, media
    from loa.control_plane.content import ContentStore

    store = ContentStore(cp.settings.data_dir / "content")
    content = None
    if kind == "audio":
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            src = Path(folder) / "tone.wav"
            src.write_bytes(wav_bytes(duration_s, 440.0 + 10 * duration_s))
            content = media.ingest_audio(store, src, "tone.wav")
    with cp.db.write() as tx:
        item = library.create(tx, Actor(author), kind=kind, title=title, cls=cls, lvl=lvl, zone=zone,
                              content=content, text=text if kind == "text" else None, store=store)
    steps = {"draft": [], "submitted": ["submit"], "approved": ["submit", "approve"],
             "rejected": ["submit", "reject"]}[state]
    for step in steps:
        with cp.db.write() as tx:
            who = author if step == "submit" else reviewer
            approval.transition(tx, Actor(who), item.id, step, reason="chưa đạt" if step == "reject" else None)
    return item.id


class FakeBroadcaster:
    """A :class:`~loa.control_plane.scheduler.Broadcaster` that records calls; a repeated ``key`` returns the
    broadcast it already started (as a broadcaster that outlives the scheduler must)."""

    def __init__(self, first_bid: int = 1) -> None:
        import threading

        self._lock = threading.Lock()
        self._next = first_bid
        self.prefetches: list[tuple[Path, tuple[str, ...], Any]] = []
        self.plays: list[dict[str, Any]] = []
        self.by_key: dict[str, int] = {}
        self.fail: Exception | None = None

    def prefetch(self, content_path: Path, zones: Any, at: Any) -> None:
        with self._lock:
            self.prefetches.append((content_path, tuple(zones), at))

    def play(self, content_path: Path, zones: Any, at: Any, cls: Any, lvl: Any, policy: Any, *, key: str,  # noqa: PLR0917
             duration: Any) -> int:
        with self._lock:
            self.plays.append({"path": content_path, "zones": tuple(zones), "at": at, "cls": cls, "lvl": lvl,
                               "policy": policy, "key": key, "duration": duration})
            if self.fail is not None:
                error, self.fail = self.fail, None
                raise error
            if key not in self.by_key:
                self.by_key[key] = self._next
                self._next += 1
            return self.by_key[key]


__all__ += ["FakeBroadcaster", "library_item", "wav_bytes"]
