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
from loa.control_plane.auth import PERMISSIONS, ROLES, Actor
from loa.control_plane.db.schema import audit_head
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import TEST_PASSWORD, Seed, bearer, fast_settings, stream_request

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


@dataclass
class World:
    cp: ControlPlane
    seed: Seed

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
}


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
                                  files=request.files, headers=headers)
        status, text = response.status_code, response.text
    want = expected(DECLARED[(method, path)], kind, role, variant)
    if want is None:
        assert 200 <= status < 300, f"{method} {path} as {role}/{variant}: {status} {text[:300]}"
        if method != "GET":  # every change is audited, with who and from where, in its own transaction
            with state.cp.db.read() as conn:
                new = audit.entries(conn, limit=10)
            new = [e for e in new if e.seq > head]
            assert new, f"{method} {path} changed something without an audit entry"
            assert all(e.source == "testclient" for e in new)
            assert {e.actor for e in new} <= {who, request.json.get("username") if request.json else None}
    else:
        assert status == want, f"{method} {path} as {role}/{variant}: {status} {text[:300]}"
        assert _audit_head(state) == head, "a refused request must change nothing"
