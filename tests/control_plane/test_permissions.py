"""Every route x every role x scope (national, inside, outside) x unauthenticated, checked against the table.

The routes come from the app itself: a route added without a request recipe here fails
``test_every_route_has_a_recipe``, so none can be forgotten. A recipe makes fresh objects inside district
``490`` (so mutating requests never interfere) and says whether the route acts on such an object, lists, or
needs national scope. The expected answer follows from the permission table: 401 without a token, 403 when the
role lacks the route's permission or the object lies outside the caller's scope, 2xx otherwise.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from loa.control_plane import audit, enrolment, users
from loa.control_plane.api import ROUTERS, create_app
from loa.control_plane.auth import PERMISSIONS, ROLES, Actor, Principal
from loa.control_plane.db.schema import audit_head
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import (
    TEST_PASSWORD,
    FakeDispatcher,
    FakeLive,
    Seed,
    bearer,
    fast_settings,
    stream_request,
)

IN, OUT = "490", "491"          # the caller's scope in the "in" and "out" variants
HOME = "20194"                   # where every test object lives (inside 490, outside 491)
VARIANTS = ("national", "in", "out", "anon")
_numbers = count(1)


@dataclass
class Request:
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    stream: bool = False
    data: dict[str, Any] | None = None  # form fields sent with files
    audited: bool = True                # False: a POST that only checks (changes nothing, so no audit entry)


@dataclass
class World:
    cp: ControlPlane
    seed: Seed
    operators: list[Principal] = field(default_factory=list)

    def fresh(self) -> str:
        return f"t{next(_numbers)}"

    def zone(self) -> str:
        code = self.fresh()
        with self.cp.db.write() as tx:
            from loa.control_plane import zones

            zones.create(tx, Actor("seed"), code=code, name="Thôn thử", parent=HOME)
        return code

    def user(self) -> str:
        name = self.fresh()
        self.seed.user(name, "viewer", HOME)
        return name

    def device(self) -> str:
        return self.seed.device(f"{HOME}-01")

    def enrolment_token(self) -> int:
        from datetime import timedelta

        with self.cp.db.write() as tx:
            _, record = enrolment.create_token(tx, Actor("seed"), zone=HOME, ttl=timedelta(hours=1))
        return record.id


    def alert(self, state: str = "draft") -> int:
        """An alert on HOME that seed NOC operators left as a draft, pending approval, or active."""
        from loa.control_plane import alerts

        while len(self.operators) < 2:
            principal = users.resolve_token(self.cp.db, self.seed.user(self.fresh(), "noc"))
            assert principal is not None
            self.operators.append(principal)
        first, second = self.operators
        authority, dispatcher = self.cp.authority, self.cp.alert_dispatcher
        draft = alerts.AlertDraft(zones=(HOME,), status="exercise", audio=alerts.AlertAudio(ALERT_AUDIO))
        with self.cp.db.write() as tx:
            alert_id = alerts.create(tx, first, None, draft).id
        if state != "draft":
            alerts.trigger(self.cp.db, first, None, alert_id, two_person=True, authority=authority,
                           dispatcher=dispatcher)
        if state == "active":
            alerts.confirm(self.cp.db, second, None, alert_id, authority=authority, dispatcher=dispatcher)
        return alert_id


ALERT_AUDIO = "ab" * 32


def _key() -> str:
    return base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes_raw()).decode()


def _own_token(world: World, username: str) -> int:
    with world.cp.db.write() as tx:
        _, record = users.issue_token(tx, users.get_user(tx.conn, username), kind="api", name="extra")
    return record.id


# (method, path) -> (what it acts on: "object" | "list" | "national" | "none", recipe(world, caller) -> Request)
Recipe = Callable[[World, str], Request]
RECIPES: dict[tuple[str, str], tuple[str, Recipe]] = {
    ("POST", "/api/v1/auth/login"): ("none", lambda w, who: Request(
        "/api/v1/auth/login", json={"username": w.user(), "password": TEST_PASSWORD})),
    ("POST", "/api/v1/auth/logout"): ("none", lambda w, who: Request("/api/v1/auth/logout")),
    ("GET", "/api/v1/auth/me"): ("none", lambda w, who: Request("/api/v1/auth/me")),
    ("POST", "/api/v1/auth/password"): ("none", lambda w, who: Request(
        "/api/v1/auth/password", json={"current": TEST_PASSWORD, "new": "another long password"})),
    ("GET", "/api/v1/auth/tokens"): ("none", lambda w, who: Request("/api/v1/auth/tokens")),
    ("POST", "/api/v1/auth/tokens"): ("none", lambda w, who: Request("/api/v1/auth/tokens", json={"name": "x"})),
    ("DELETE", "/api/v1/auth/tokens/{token_id}"): ("none", lambda w, who: Request(
        f"/api/v1/auth/tokens/{_own_token(w, who)}" if who else "/api/v1/auth/tokens/1")),
    ("GET", "/api/v1/users"): ("list", lambda w, who: Request("/api/v1/users")),
    ("POST", "/api/v1/users"): ("object", lambda w, who: Request(
        "/api/v1/users", json={"username": w.fresh(), "role": "viewer", "scope": HOME})),
    ("GET", "/api/v1/users/{username}"): ("object", lambda w, who: Request(f"/api/v1/users/{w.user()}")),
    ("PATCH", "/api/v1/users/{username}"): ("object", lambda w, who: Request(
        f"/api/v1/users/{w.user()}", json={"display_name": "Nguyễn Văn A"})),
    ("POST", "/api/v1/users/{username}/password-reset"): ("object", lambda w, who: Request(
        f"/api/v1/users/{w.user()}/password-reset")),
    ("GET", "/api/v1/zones"): ("list", lambda w, who: Request("/api/v1/zones")),
    ("POST", "/api/v1/zones"): ("object", lambda w, who: Request(
        "/api/v1/zones", json={"code": w.fresh(), "name": "Thôn mới", "parent": HOME})),
    ("POST", "/api/v1/zones/import"): ("object", lambda w, who: Request(
        "/api/v1/zones/import", files={"file": ("z.csv", io.BytesIO(f"{w.fresh()},Thôn,{HOME}\n".encode()),
                                                "text/csv")})),
    ("GET", "/api/v1/zones/{code}"): ("object", lambda w, who: Request(f"/api/v1/zones/{w.zone()}")),
    ("PATCH", "/api/v1/zones/{code}"): ("object", lambda w, who: Request(
        f"/api/v1/zones/{w.zone()}", json={"name": "Tên mới"})),
    ("DELETE", "/api/v1/zones/{code}"): ("object", lambda w, who: Request(f"/api/v1/zones/{w.zone()}")),
    ("GET", "/api/v1/zones/{code}/subtree"): ("object", lambda w, who: Request(f"/api/v1/zones/{HOME}/subtree")),
    ("GET", "/api/v1/zones/{code}/path"): ("object", lambda w, who: Request(f"/api/v1/zones/{HOME}/path")),
    ("GET", "/api/v1/devices"): ("list", lambda w, who: Request("/api/v1/devices")),
    ("POST", "/api/v1/devices"): ("object", lambda w, who: Request(
        "/api/v1/devices", json={"public_key": _key(), "kind": "speaker", "zone": HOME})),
    ("GET", "/api/v1/devices/{device_id}"): ("object", lambda w, who: Request(f"/api/v1/devices/{w.device()}")),
    ("PATCH", "/api/v1/devices/{device_id}"): ("object", lambda w, who: Request(
        f"/api/v1/devices/{w.device()}", json={"name": "Loa chợ", "disabled": True})),
    ("GET", "/api/v1/devices/{device_id}/history"): ("object", lambda w, who: Request(
        f"/api/v1/devices/{w.device()}/history")),
    ("GET", "/api/v1/enrolment-tokens"): ("list", lambda w, who: Request("/api/v1/enrolment-tokens")),
    ("POST", "/api/v1/enrolment-tokens"): ("object", lambda w, who: Request(
        "/api/v1/enrolment-tokens", json={"zone": HOME})),
    ("DELETE", "/api/v1/enrolment-tokens/{token_id}"): ("object", lambda w, who: Request(
        f"/api/v1/enrolment-tokens/{w.enrolment_token()}")),
    ("GET", "/api/v1/audit"): ("national", lambda w, who: Request("/api/v1/audit")),
    ("GET", "/api/v1/audit/verify"): ("national", lambda w, who: Request("/api/v1/audit/verify")),
    ("GET", "/healthz"): ("none", lambda w, who: Request("/healthz")),
    ("GET", "/metrics"): ("none", lambda w, who: Request("/metrics")),
    ("GET", "/events"): ("list", lambda w, who: Request("/events", stream=True)),
    ("GET", "/openapi.json"): ("none", lambda w, who: Request("/openapi.json")),
    ("GET", "/api/v1/alerts"): ("list", lambda w, who: Request("/api/v1/alerts")),
    ("POST", "/api/v1/alerts"): ("object", lambda w, who: Request(
        "/api/v1/alerts", json={"zones": [HOME], "status": "exercise", "content_id": ALERT_AUDIO,
                                "text": "Diễn tập phòng chống bão"})),
    ("GET", "/api/v1/alerts/{alert_id}"): ("object", lambda w, who: Request(f"/api/v1/alerts/{w.alert()}")),
    ("PATCH", "/api/v1/alerts/{alert_id}"): ("object", lambda w, who: Request(
        f"/api/v1/alerts/{w.alert()}", json={"text": "Diễn tập sơ tán", "preroll_ms": 2000})),
    ("POST", "/api/v1/alerts/{alert_id}/trigger"): ("object", lambda w, who: Request(
        f"/api/v1/alerts/{w.alert()}/trigger")),
    ("POST", "/api/v1/alerts/{alert_id}/confirm"): ("object", lambda w, who: Request(
        f"/api/v1/alerts/{w.alert('pending_approval')}/confirm")),
    ("POST", "/api/v1/alerts/{alert_id}/cancel"): ("object", lambda w, who: Request(
        f"/api/v1/alerts/{w.alert('active')}/cancel")),
    ("GET", "/api/v1/authority"): ("list", lambda w, who: Request("/api/v1/authority")),
    ("GET", "/api/v1/reports/as-played"): ("list", lambda w, who: Request("/api/v1/reports/as-played")),
    ("GET", "/api/v1/reports/uptime"): ("list", lambda w, who: Request("/api/v1/reports/uptime")),
    ("GET", "/api/v1/reports/broadcast-hours"): ("list", lambda w, who: Request("/api/v1/reports/broadcast-hours")),
}


# -- library, approval, playlists, schedule ----------------------------------------------------------------------

_AUDIO: dict[int, int] = {}  # one audio item per world (encoding is the slow part), shared by the playlist recipes


def _item(w: World, state: str = "approved") -> int:
    from loa.control_plane.testing import library_item

    return library_item(w.cp, zone=HOME, state=state)


def _audio(w: World) -> int:
    from loa.control_plane.testing import library_item

    if id(w.cp) not in _AUDIO:
        _AUDIO[id(w.cp)] = library_item(w.cp, zone=HOME, kind="audio", duration_s=0.2)
    return _AUDIO[id(w.cp)]


def _playlist(w: World) -> int:
    from loa.control_plane import library

    member = _audio(w)
    with w.cp.db.write() as tx:
        return library.create(tx, Actor("seed-editor"), kind="playlist", title="Sáng", cls=0, lvl=0, zone=HOME,
                              members=[member]).id


def _entry_body(w: World, **extra: Any) -> dict[str, Any]:
    return {"title": "Bản tin", "item": _item(w), "zones": [HOME], "start": f"2099-01-01T{next(_numbers) % 24:02}:00",
            "duration_ms": 1000, **extra}


def _entry(w: World) -> int:
    from loa.control_plane import recurrence, schedule

    body = _entry_body(w)
    spec = schedule.EntrySpec(title="Bản tin", item_id=body["item"], targets=(HOME,), duration_ms=1000,
                              timing=recurrence.make(datetime.fromisoformat(body["start"])))
    with w.cp.db.write() as tx:
        return schedule.create(tx, Actor("seed-scheduler"), spec, force=True)[0].id


def _upload(name: str, blob: bytes, kind: str) -> dict[str, Any]:
    return {"file": (name, io.BytesIO(blob), kind)}


_FORM = {"title": "Bản tin", "zone": HOME, "level": "commune"}
_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
_WINDOW = {"since": "2099-01-01T00:00:00+07:00", "until": "2099-01-02T00:00:00+07:00"}

RECIPES.update({
    ("GET", "/api/v1/library"): ("list", lambda w, who: Request("/api/v1/library")),
    ("POST", "/api/v1/library/audio"): ("object", lambda w, who: Request(
        "/api/v1/library/audio", files=_upload("a.wav", _wav(), "audio/wav"), data=_FORM)),
    ("POST", "/api/v1/library/images"): ("object", lambda w, who: Request(
        "/api/v1/library/images", files=_upload("a.png", _PNG, "image/png"), data=_FORM)),
    ("POST", "/api/v1/library/texts"): ("object", lambda w, who: Request(
        "/api/v1/library/texts", json={"title": "Thông báo", "text": "Họp tổ dân phố", "zone": HOME,
                                       "level": "commune"})),
    ("GET", "/api/v1/library/{item_id}"): ("object", lambda w, who: Request(f"/api/v1/library/{_item(w)}")),
    ("PATCH", "/api/v1/library/{item_id}"): ("object", lambda w, who: Request(
        f"/api/v1/library/{_item(w, 'draft')}", json={"title": "Tên mới"})),
    ("DELETE", "/api/v1/library/{item_id}"): ("object", lambda w, who: Request(f"/api/v1/library/{_item(w)}")),
    ("GET", "/api/v1/library/{item_id}/content"): ("object", lambda w, who: Request(
        f"/api/v1/library/{_item(w)}/content")),
    ("POST", "/api/v1/library/{item_id}/submit"): ("object", lambda w, who: Request(
        f"/api/v1/library/{_item(w, 'draft')}/submit")),
    ("POST", "/api/v1/library/{item_id}/approve"): ("object", lambda w, who: Request(
        f"/api/v1/library/{_item(w, 'submitted')}/approve")),
    ("POST", "/api/v1/library/{item_id}/reject"): ("object", lambda w, who: Request(
        f"/api/v1/library/{_item(w, 'submitted')}/reject", json={"reason": "Sai chính tả"})),
    ("GET", "/api/v1/playlists"): ("list", lambda w, who: Request("/api/v1/playlists")),
    ("POST", "/api/v1/playlists"): ("object", lambda w, who: Request(
        "/api/v1/playlists", json={"title": "Sáng", "items": [_audio(w)], "zone": HOME, "level": "commune"})),
    ("GET", "/api/v1/playlists/{playlist_id}"): ("object", lambda w, who: Request(
        f"/api/v1/playlists/{_playlist(w)}")),
    ("PATCH", "/api/v1/playlists/{playlist_id}"): ("object", lambda w, who: Request(
        f"/api/v1/playlists/{_playlist(w)}", json={"title": "Chiều"})),
    ("GET", "/api/v1/schedule"): ("list", lambda w, who: Request("/api/v1/schedule")),
    ("POST", "/api/v1/schedule"): ("object", lambda w, who: Request(
        "/api/v1/schedule", json=_entry_body(w, force=True))),
    ("POST", "/api/v1/schedule/check"): ("object", lambda w, who: Request(
        "/api/v1/schedule/check", json=_entry_body(w), audited=False)),
    ("GET", "/api/v1/schedule/occurrences"): ("list", lambda w, who: Request(
        "/api/v1/schedule/occurrences", params=_WINDOW)),
    ("GET", "/api/v1/schedule/{entry_id}"): ("object", lambda w, who: Request(f"/api/v1/schedule/{_entry(w)}")),
    ("PATCH", "/api/v1/schedule/{entry_id}"): ("object", lambda w, who: Request(
        f"/api/v1/schedule/{_entry(w)}", json={"title": "Bản tin tối", "force": True})),
    ("DELETE", "/api/v1/schedule/{entry_id}"): ("object", lambda w, who: Request(f"/api/v1/schedule/{_entry(w)}")),
    ("GET", "/api/v1/schedule/{entry_id}/firings"): ("object", lambda w, who: Request(
        f"/api/v1/schedule/{_entry(w)}/firings")),
    ("GET", "/api/v1/broadcasts"): ("list", lambda w, who: Request("/api/v1/broadcasts")),
    ("GET", "/api/v1/broadcasts/{bid}"): ("object", lambda w, who: Request(f"/api/v1/broadcasts/{_live(w)}")),
    ("POST", "/api/v1/broadcasts"): ("object", lambda w, who: Request(
        "/api/v1/broadcasts", json={"zones": [HOME], "title": "Đài tỉnh", "url": "http://127.0.0.1:9/live.mp3"})),
    ("POST", "/api/v1/broadcasts/{bid}/stop"): ("object", lambda w, who: Request(
        f"/api/v1/broadcasts/{_live(w)}/stop")),
})


def _live(world: World) -> int:
    """A relay running to HOME."""
    from loa.control_plane.dataplane import LiveSource

    live = world.cp.live
    assert live is not None
    bid, _ = live.start_live(LiveSource(url="http://127.0.0.1:9/x.mp3"), [HOME], cls=0, lvl=0, policy="resume",
                             title="Đài tỉnh")
    return bid


def _wav() -> bytes:
    from loa.control_plane.testing import wav_bytes

    return wav_bytes(0.2)

def _declared_routes() -> dict[tuple[str, str], str]:
    """(method, path) -> permission, for every route the routers declare."""
    out = {}
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in route.methods:
                out[(method, route.path)] = (route.openapi_extra or {}).get("x-loa-permission", "")
    return out


DECLARED = {**_declared_routes(), ("GET", "/openapi.json"): "public"}


def expected(permission: str, kind: str, role: str, variant: str) -> int | None:
    """The status the table demands (None: any 2xx)."""
    if permission == "public":
        return None
    if variant == "anon":
        return 401
    if permission != "self" and permission not in PERMISSIONS[role]:
        return 403
    if kind == "national" and variant != "national":
        return 403
    if kind == "object" and variant == "out":
        return 403
    return None


CASES = [(method, path, role, variant) for (method, path) in sorted(DECLARED) for role in ROLES
         for variant in VARIANTS if variant != "anon" or role == ROLES[0]]


def test_every_route_has_a_recipe_and_a_permission(tmp_path: Path) -> None:
    app = create_app(fast_settings(tmp_path))
    try:
        served = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
        stack = list(app.routes)
        while stack:  # also routes left out of the schema; included routers are walked into
            route = stack.pop()
            stack.extend(getattr(getattr(route, "original_router", None), "routes", ()))
            served |= {(m, route.path) for m in (getattr(route, "methods", None) or ()) if m != "HEAD"}
        assert served == set(RECIPES), "add a recipe for each new route (and remove ones for removed routes)"
        assert set(DECLARED) == served
        for key, permission in DECLARED.items():
            assert permission in {"public", "self"} or permission in PERMISSIONS["admin"], key
    finally:
        app.state.control_plane.close()


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, TestClient]]:
    cp = ControlPlane(fast_settings(tmp_path_factory.mktemp("matrix"), module_db_url))
    cp.alert_dispatcher = FakeDispatcher()
    cp.live = FakeLive(cp)
    seed = Seed(cp)
    seed.province()
    app = create_app(control_plane=cp)
    with TestClient(app) as client:
        yield World(cp, seed), client
    cp.close()


def _audit_head(world: World) -> int:
    with world.cp.db.read() as conn:
        return int(conn.execute(select(audit_head.c.seq)).scalar_one())


def _caller(world: World, role: str, variant: str) -> tuple[str, dict[str, str]]:
    if variant == "anon":
        return "", {}
    name = world.fresh()
    scope = {"national": None, "in": IN, "out": OUT}[variant]
    return name, bearer(world.seed.user(name, role, scope))


@pytest.mark.parametrize(("method", "path", "role", "variant"), CASES)
def test_permission_matrix(world: tuple[World, TestClient], method: str, path: str, role: str,
                           variant: str) -> None:
    state, client = world
    kind, recipe = RECIPES[(method, path)]
    who, headers = _caller(state, role, variant)
    request = recipe(state, who)
    head = _audit_head(state)
    if request.stream:
        status, _, _ = stream_request(client.app, request.path, headers)
        text = ""
    else:
        response = client.request(method, request.path, json=request.json, params=request.params,
                                  files=request.files, data=request.data, headers=headers)
        status, text = response.status_code, response.text
    want = expected(DECLARED[(method, path)], kind, role, variant)
    if want is None:
        assert 200 <= status < 300, f"{method} {path} as {role}/{variant}: {status} {text[:300]}"
        if method != "GET" and request.audited:  # every change is audited, with who and from where, in its own
            # transaction
            with state.cp.db.read() as conn:
                new = audit.entries(conn, limit=10)
            new = [e for e in new if e.seq > head]
            assert new, f"{method} {path} changed something without an audit entry"
            assert all(e.source == "testclient" for e in new)
            assert {e.actor for e in new} <= {who, request.json.get("username") if request.json else None}
    else:
        assert status == want, f"{method} {path} as {role}/{variant}: {status} {text[:300]}"
        assert _audit_head(state) == head, "a refused request must change nothing"
