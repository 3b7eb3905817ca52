"""The HTTP API: flows, pagination and filters, problem+json for every error, health, metrics, OpenAPI."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient

from loa.control_plane import users
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import PROVINCE_CSV, TEST_PASSWORD, Seed, bearer, fast_settings

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int, kind: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["type"], str)
    if kind is not None:
        assert body["type"] == f"/problems/{kind}"
    assert "Traceback" not in response.text
    return body


@pytest.fixture
def admin(seed: Seed) -> dict[str, str]:
    seed.province()
    return bearer(seed.user("root", "admin"))


def test_first_admin_logs_in_and_must_change_the_password(cp: ControlPlane, client: TestClient) -> None:
    first = users.ensure_first_admin(cp.db, cp.passwords)
    assert first is not None
    assert users.ensure_first_admin(cp.db, cp.passwords) is None
    username, password = first
    login = client.post("/api/v1/auth/login", json={"username": "ADMIN", "password": password})
    assert login.status_code == 200, login.text
    body = login.json()
    assert body["user"]["must_change_password"] is True
    assert body["token_type"] == "bearer"
    headers = bearer(body["token"])
    assert client.get("/api/v1/auth/me", headers=headers).json()["username"] == username
    blocked = assert_problem(client.get("/api/v1/zones", headers=headers), 403, "forbidden")
    assert blocked["reason"] == "password-change-required"
    assert_problem(client.post("/api/v1/auth/password", headers=headers,
                               json={"current": "wrong password!", "new": "a brand new password"}), 403)
    assert_problem(client.post("/api/v1/auth/password", headers=headers, json={"current": password, "new": "short"}),
                   422, "invalid")
    changed = client.post("/api/v1/auth/password", headers=headers,
                          json={"current": password, "new": "a brand new password"})
    assert changed.status_code == 204
    assert client.get("/api/v1/zones", headers=headers).status_code == 200
    relogin = client.post("/api/v1/auth/login", json={"username": "admin", "password": "a brand new password"})
    assert relogin.json()["user"]["must_change_password"] is False
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert_problem(client.get("/api/v1/auth/me", headers=headers), 401, "unauthorized")


def test_api_tokens_are_shown_once_listed_and_revoked(client: TestClient, admin: dict[str, str]) -> None:
    created = client.post("/api/v1/auth/tokens", headers=admin, json={"name": "nightly import", "expires_in_days": 30})
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("loa_")
    listed = client.get("/api/v1/auth/tokens", headers=admin).json()
    assert [t["name"] for t in listed] == ["test", "nightly import"]
    assert "token" not in listed[1]
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 200
    assert client.delete(f"/api/v1/auth/tokens/{created.json()['id']}", headers=admin).status_code == 204
    assert_problem(client.get("/api/v1/auth/me", headers=bearer(token)), 401)
    assert_problem(client.delete(f"/api/v1/auth/tokens/{created.json()['id']}", headers=admin), 404, "not-found")


def test_users_are_managed_within_scope(client: TestClient, seed: Seed, admin: dict[str, str]) -> None:
    created = client.post("/api/v1/users", headers=admin, json={
        "username": "Lan.Nguyen", "role": "admin", "scope": "490", "display_name": "Nguyễn Thị Lan"})
    assert created.status_code == 201, created.text
    assert created.json()["user"]["username"] == "lan.nguyen"
    one_time = created.json()["password"]
    assert one_time
    lan = client.post("/api/v1/auth/login", json={"username": "lan.nguyen", "password": one_time}).json()["token"]
    client.post("/api/v1/auth/password", headers=bearer(lan), json={"current": one_time, "new": "Lan's new password"})
    district = bearer(lan)
    ok = client.post("/api/v1/users", headers=district, json={"username": "viewer1", "role": "viewer",
                                                              "scope": "20194", "password": TEST_PASSWORD})
    assert ok.status_code == 201
    assert ok.json()["password"] is None
    assert_problem(client.post("/api/v1/users", headers=district, json={"username": "x1", "role": "viewer",
                                                                        "scope": "491"}), 403)
    assert_problem(client.post("/api/v1/users", headers=district, json={"username": "x2", "role": "viewer"}), 403)
    assert_problem(client.post("/api/v1/users", headers=district, json={"username": "viewer1", "role": "viewer",
                                                                        "scope": "490"}), 409, "conflict")
    listed = client.get("/api/v1/users", headers=district).json()["items"]
    assert [u["username"] for u in listed] == ["lan.nguyen", "viewer1"]
    assert_problem(client.get("/api/v1/users/root", headers=district), 403)
    assert_problem(client.patch("/api/v1/users/viewer1", headers=district, json={"scope": None}), 403)
    assert_problem(client.patch("/api/v1/users/lan.nguyen", headers=district, json={"role": "viewer"}), 403)
    patched = client.patch("/api/v1/users/viewer1", headers=district, json={"role": "scheduler", "scope": "20195"})
    assert (patched.json()["role"], patched.json()["scope"]) == ("scheduler", "20195")
    viewer = bearer(seed.token("viewer1"))
    assert client.get("/api/v1/auth/me", headers=viewer).status_code == 200
    reset = client.post("/api/v1/users/viewer1/password-reset", headers=district)
    assert reset.status_code == 200
    assert_problem(client.get("/api/v1/auth/me", headers=viewer), 401)  # tokens revoked
    assert client.post("/api/v1/auth/login", json={"username": "viewer1",
                                                   "password": reset.json()["password"]}).status_code == 200
    disabled = client.patch("/api/v1/users/lan.nguyen", headers=admin, json={"disabled": True})
    assert disabled.json()["disabled"] is True
    assert_problem(client.get("/api/v1/auth/me", headers=district), 401)
    assert_problem(client.patch("/api/v1/users/root", headers=admin, json={"disabled": True}), 403)


def test_the_last_national_admin_stays(client: TestClient, seed: Seed, admin: dict[str, str]) -> None:
    other = bearer(seed.user("second", "admin"))
    assert client.patch("/api/v1/users/second", headers=admin, json={"role": "viewer"}).status_code == 200
    assert_problem(client.patch("/api/v1/users/root", headers=other, json={"disabled": True}), 403)
    seed.user("third", "admin")
    assert client.patch("/api/v1/users/third", headers=admin, json={"scope": "48"}).status_code == 200
    from loa.control_plane.auth import Actor
    from loa.control_plane.errors import ConflictError

    with pytest.raises(ConflictError, match="no enabled national admin"), seed.cp.db.write() as tx:
        users.update_user(tx, Actor("third"), "root", disabled=True)  # the API forbids it earlier; this is the floor


def test_zones_api(client: TestClient, admin: dict[str, str]) -> None:
    roots = client.get("/api/v1/zones", headers=admin, params={"roots": True}).json()
    assert [z["code"] for z in roots["items"]] == ["48"]
    page1 = client.get("/api/v1/zones", headers=admin, params={"limit": 4}).json()
    page2 = client.get("/api/v1/zones", headers=admin, params={"limit": 4, "cursor": page1["next_cursor"]}).json()
    page3 = client.get("/api/v1/zones", headers=admin, params={"limit": 4, "cursor": page2["next_cursor"]}).json()
    codes = [z["code"] for p in (page1, page2, page3) for z in p["items"]]
    assert codes == sorted(codes)
    assert len(codes) == 9
    assert page3["next_cursor"] is None
    assert_problem(client.get("/api/v1/zones", headers=admin, params={"cursor": "garbage"}), 422, "invalid")
    assert client.get("/api/v1/zones", headers=admin, params={"q": "Hiệp"}).json()["items"][0]["code"] == "20194"
    created = client.post("/api/v1/zones", headers=admin, json={"code": "20194-03", "name": "Tổ dân phố 3",
                                                                "parent": "20194", "level": "hamlet"})
    assert created.status_code == 201
    path = client.get("/api/v1/zones/20194-03/path", headers=admin).json()["path"]
    assert [z["code"] for z in path] == ["48", "490", "20194", "20194-03"]
    subtree = client.get("/api/v1/zones/490/subtree", headers=admin, params={"limit": 2}).json()
    assert [(n["depth"], n["zone"]["code"]) for n in subtree["items"]] == [(0, "490"), (1, "20194")]
    assert subtree["next_offset"] == 2
    moved = client.patch("/api/v1/zones/20194-03", headers=admin, json={"parent": "20195", "name": "Tổ 3"})
    assert (moved.json()["parent"], moved.json()["name"]) == ("20195", "Tổ 3")
    assert_problem(client.patch("/api/v1/zones/490", headers=admin, json={"parent": "20194"}), 422, "invalid")
    assert_problem(client.delete("/api/v1/zones/490", headers=admin), 409, "conflict")
    assert client.delete("/api/v1/zones/20194-03", headers=admin).status_code == 204
    assert_problem(client.get("/api/v1/zones/20194-03", headers=admin), 404, "not-found")


def test_zone_csv_upload(client: TestClient, admin: dict[str, str]) -> None:
    good = "code,name,parent,level\n48,Thành phố Đà Nẵng,,province\n492,Quận Hải Châu,48,district\n"
    result = client.post("/api/v1/zones/import", headers=admin,
                         files={"file": ("zones.csv", io.BytesIO(b"\xef\xbb\xbf" + good.encode()), "text/csv")})
    assert result.status_code == 200, result.text
    assert {k: result.json()[k] for k in ("rows", "created", "unchanged")} == {"rows": 2, "created": 1,
                                                                                "unchanged": 1}
    bad = "code,name,parent\n493,,48\n494,Sơn Trà,nowhere\n"
    problem = assert_problem(client.post("/api/v1/zones/import", headers=admin,
                                         files={"file": ("zones.csv", io.BytesIO(bad.encode()), "text/csv")}),
                             422, "invalid")
    assert [e["line"] for e in problem["errors"]] == [2, 3]
    assert_problem(client.post("/api/v1/zones/import", headers=admin), 422, "invalid")


def _key() -> str:
    return base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes_raw()).decode()


def test_devices_api(client: TestClient, seed: Seed, admin: dict[str, str]) -> None:
    enrolled = client.post("/api/v1/devices", headers=admin, json={"public_key": _key(), "kind": "speaker",
                                                                  "zone": "20194-01", "name": "Loa đầu thôn"})
    assert enrolled.status_code == 201, enrolled.text
    ident = enrolled.json()["id"]
    others = [seed.device("20227-01"), seed.device(None, kind="board")]
    assert_problem(client.post("/api/v1/devices", headers=admin, json={"public_key": "AAAA", "kind": "speaker"}),
                   422, "invalid")
    listed = client.get("/api/v1/devices", headers=admin, params={"zone": "490"}).json()["items"]
    assert [d["id"] for d in listed] == [ident]
    assert len(client.get("/api/v1/devices", headers=admin).json()["items"]) == 3
    assert [d["id"] for d in client.get("/api/v1/devices", headers=admin,
                                        params={"unassigned": True}).json()["items"]] == [others[1]]
    patched = client.patch(f"/api/v1/devices/{ident}", headers=admin, json={"zone": "20227", "disabled": True,
                                                                          "name": "Loa chợ"})
    assert {k: patched.json()[k] for k in ("zone", "disabled", "name")} == {"zone": "20227", "disabled": True,
                                                                           "name": "Loa chợ"}
    unassigned = client.patch(f"/api/v1/devices/{ident}", headers=admin, json={"zone": None})
    assert unassigned.json()["zone"] is None
    assert client.get(f"/api/v1/devices/{ident}/history", headers=admin).json() == {"items": [],
                                                                                     "next_cursor": None}
    assert_problem(client.get("/api/v1/devices/0123456789abcdef", headers=admin), 404, "not-found")
    assert_problem(client.get("/api/v1/devices/NOT-AN-ID", headers=admin), 422, "invalid")
    token = client.post("/api/v1/enrolment-tokens", headers=admin, json={"zone": "20194", "ttl_hours": 24})
    assert token.status_code == 201
    assert len(token.json()["token"]) == 19
    listed_tokens = client.get("/api/v1/enrolment-tokens", headers=admin, params={"active": True}).json()["items"]
    assert [t["id"] for t in listed_tokens] == [token.json()["id"]]
    assert "token" not in listed_tokens[0]
    assert client.delete(f"/api/v1/enrolment-tokens/{token.json()['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/enrolment-tokens", headers=admin, params={"active": True}).json()["items"] == []


def test_scoped_operators_see_only_their_subtree(client: TestClient, seed: Seed, admin: dict[str, str]) -> None:
    inside, outside = seed.device("20194-01"), seed.device("20227-01")
    noc = bearer(seed.user("noc490", "noc", "490"))
    assert [d["id"] for d in client.get("/api/v1/devices", headers=noc).json()["items"]] == [inside]
    assert client.get(f"/api/v1/devices/{inside}", headers=noc).status_code == 200
    assert_problem(client.get(f"/api/v1/devices/{outside}", headers=noc), 403, "forbidden")
    assert_problem(client.patch(f"/api/v1/devices/{inside}", headers=noc, json={"zone": "20227"}), 403)
    assert client.patch(f"/api/v1/devices/{inside}", headers=noc, json={"zone": "20195"}).status_code == 200
    assert_problem(client.get("/api/v1/devices", headers=noc, params={"zone": "491"}), 403)
    zones_seen = {z["code"] for z in client.get("/api/v1/zones", headers=noc).json()["items"]}
    assert zones_seen == {"490", "20194", "20195", "20194-01", "20194-02"}
    assert_problem(client.get("/api/v1/audit", headers=noc), 403)


def test_audit_api_records_actor_and_source(client: TestClient, admin: dict[str, str]) -> None:
    client.post("/api/v1/zones", headers=admin, json={"code": "z1", "name": "Z1"})
    entries = client.get("/api/v1/audit", headers=admin, params={"action": "zone.create"}).json()["items"]
    assert [(e["actor"], e["target"], e["source"]) for e in entries] == [("root", "z1", "testclient")]
    page = client.get("/api/v1/audit", headers=admin, params={"limit": 2}).json()
    older = client.get("/api/v1/audit", headers=admin, params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert page["items"][-1]["seq"] > older["items"][0]["seq"]
    assert client.get("/api/v1/audit", headers=admin, params={"since": "2999-01-01T00:00:00"}).json()["items"] == []
    assert_problem(client.get("/api/v1/audit", headers=admin, params={"since": "0001-01-01T00:00:00+05:00"}), 422)
    verified = client.get("/api/v1/audit/verify", headers=admin).json()
    assert verified["ok"] is True
    assert verified["entries"] >= 3


def test_problems_for_framework_errors(client: TestClient, admin: dict[str, str]) -> None:
    assert_problem(client.get("/no/such/path"), 404)
    not_allowed = assert_problem(client.put("/api/v1/zones", headers=admin), 405)
    assert "PUT" in not_allowed["detail"]
    invalid = assert_problem(client.post("/api/v1/zones", headers=admin, json={"code": "bad code", "name": ""}),
                             422, "invalid")
    assert {tuple(e["loc"]) for e in invalid["errors"]} == {("body", "code"), ("body", "name")}
    assert "input" not in invalid["errors"][0]
    assert_problem(client.post("/api/v1/zones", headers={**admin, "content-type": "application/json"},
                               content=b"{not json"), 422)
    unauth = assert_problem(client.get("/api/v1/zones"), 401, "unauthorized")
    assert unauth["detail"].startswith("log in first")
    assert client.get("/api/v1/zones").headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.get("/api/v1/zones", headers=bearer("loa_forged")), 401)


def test_a_password_never_comes_back_in_a_validation_error(client: TestClient) -> None:
    response = client.post("/api/v1/auth/login", json={"username": "x", "password": "hunter2-secret", "extra": 1})
    assert_problem(response, 422)
    assert "hunter2-secret" not in response.text


def test_unexpected_errors_are_a_500_problem_without_internals(client: TestClient, cp: ControlPlane,
                                                               admin: dict[str, str],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from loa.control_plane import zones

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(zones, "list_zones", broken)
    response = client.get("/api/v1/zones", headers=admin)
    body = assert_problem(response, 500, "internal")
    assert "secret internal detail" not in response.text
    assert "incident" in body["detail"]
    assert "secret internal detail" in caplog.text


def test_login_rate_limit(tmp_path: Any, db_url: str) -> None:
    from loa.control_plane.api import create_app
    from loa.control_plane.ratelimit import LimitPolicy

    now = [1000.0]
    settings = fast_settings(tmp_path, db_url, monotonic=lambda: now[0],
                             login_user_policy=LimitPolicy(failures=5, window_s=60, lockout_s=30, max_lockout_s=120))
    plane = ControlPlane(settings)
    try:
        Seed(plane).user("lan", "viewer")
        with TestClient(create_app(control_plane=plane)) as c:
            def attempt(password: str) -> Any:
                return c.post("/api/v1/auth/login", json={"username": "lan", "password": password})

            for _ in range(5):
                assert_problem(attempt("wrong password"), 401, "unauthorized")
            locked = assert_problem(attempt(TEST_PASSWORD), 429, "rate-limited")
            assert locked["retry_after"] == 30
            assert attempt(TEST_PASSWORD).headers["retry-after"] == "30"
            now[0] += 31
            assert_problem(attempt("wrong again"), 401)  # after a lockout one more failure locks again, longer
            assert assert_problem(attempt(TEST_PASSWORD), 429)["retry_after"] == 60
            now[0] += 61
            assert attempt(TEST_PASSWORD).status_code == 200
            assert attempt("wrong password").status_code == 401  # success forgot the username's record
            unknown = assert_problem(c.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"}), 401)
            assert unknown["detail"] == "wrong username or password"
            log = c.get("/api/v1/auth/me", headers=bearer(Seed(plane).user("boss", "admin")))
            assert log.status_code == 200
            actions = [e["action"] for e in c.get("/api/v1/audit", headers=log.request.headers).json()["items"]]
            assert actions.count("login.lockout") == 2
    finally:
        plane.close()


def test_health_metrics_and_openapi(client: TestClient, seed: Seed, admin: dict[str, str]) -> None:
    seed.device("20194-01")
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    client.get("/api/v1/zones", headers=admin)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'loa_devices{state="offline"} 1.0' in text
    assert 'loa_http_requests_total{method="GET",route="/api/v1/zones",status="200"}' in text
    assert "loa_audit_entries" in text
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    responses = schema["paths"]["/api/v1/zones"]["get"]["responses"]
    assert "application/problem+json" in responses["403"]["content"]
    assert schema["paths"]["/api/v1/zones"]["get"]["x-loa-permission"] == "zones.read"
    assert client.get("/docs").status_code == 404  # no UI pulled from a CDN


def test_province_csv_fixture_is_the_seed(seed: Seed, cp: ControlPlane) -> None:
    seed.province()
    from loa.control_plane import zones

    with cp.db.read() as conn:
        assert len(zones.list_zones(conn, limit=1000)) == PROVINCE_CSV.count("\n") - 1
