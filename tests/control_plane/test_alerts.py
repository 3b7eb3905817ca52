"""Emergency alerts: the two-person rule, signatures devices verify, exercise status, the ready cancel, failures,
expiry, scope and level; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from loa.control_plane import alerts, audit, users, zones
from loa.control_plane.api import create_app
from loa.control_plane.auth import Principal
from loa.control_plane.db.schema import alerts as alerts_table
from loa.control_plane.db.schema import broadcast_log
from loa.control_plane.errors import InvalidError
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import FakeDispatcher, ManualClock, Seed, bearer, fast_settings
from loa.protocol.alert import should_play, verify_alert, verify_cancel
from loa.protocol.errors import WrongZoneError

CONTENT = "ab" * 32
TEXT = "Bão số 3 đổ bộ: người dân Phường Hòa Hiệp Bắc sơ tán ngay đến nơi trú ẩn an toàn."
START = datetime(2025, 9, 1, 1, 0, tzinfo=UTC)


@dataclass
class Env:
    cp: ControlPlane
    client: TestClient
    seed: Seed
    clock: ManualClock
    dispatcher: FakeDispatcher
    tokens: dict[str, dict[str, str]]

    def as_(self, name: str) -> dict[str, str]:
        return self.tokens[name]

    def principal(self, name: str) -> Principal:
        token = self.tokens[name]["Authorization"].split()[1]
        found = users.resolve_token(self.cp.db, token)
        assert found is not None
        return found

    def create(self, who: str = "lan", *, trigger: bool = False, **fields: Any) -> dict[str, Any]:
        body = {"zones": ["20194"], "status": "actual", "content_id": CONTENT, "text": TEXT,
                "title": "Bão số 3", **fields}
        if trigger:
            body["trigger"] = True
        response = self.client.post("/api/v1/alerts", json=body, headers=self.as_(who))
        assert response.status_code == 201, response.text
        return dict(response.json())

    def post(self, alert_id: int, action: str, who: str, status: int = 200) -> dict[str, Any]:
        response = self.client.post(f"/api/v1/alerts/{alert_id}/{action}", headers=self.as_(who))
        assert response.status_code == status, response.text
        return dict(response.json())

    def active(self, **fields: Any) -> dict[str, Any]:
        created = self.create(trigger=True, **fields)
        return self.post(created["id"], "confirm", "minh")


def _env(db_url: str, tmp_path: Path, **overrides: Any) -> Iterator[Env]:
    clock = ManualClock(START)
    cp = ControlPlane(fast_settings(tmp_path, db_url, clock=clock, **overrides))
    dispatcher = FakeDispatcher()
    cp.alert_dispatcher = dispatcher
    seed = Seed(cp)
    seed.province()
    tokens = {name: bearer(seed.user(name, role, scope)) for name, role, scope in (
        ("lan", "noc", "48"), ("minh", "noc", "48"), ("root", "admin", None), ("khe", "noc", "491"),
        ("xa", "noc", "20194"), ("huyen", "noc", "490"), ("nhin", "viewer", "20194-01"), ("xa2", "viewer", "491"),
        ("duyet", "approver", "48"))}
    with TestClient(create_app(control_plane=cp)) as client:
        yield Env(cp, client, seed, clock, dispatcher, tokens)
    cp.close()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    yield from _env(db_url, tmp_path)


def _audit_actions(env: Env, alert_id: int) -> list[tuple[str, str]]:
    with env.cp.db.read() as conn:
        found = audit.entries(conn, target=f"alert:{alert_id}", limit=100)
    return [(e.action, e.actor) for e in reversed(found)]


def _trusted(env: Env) -> dict[bytes, bytes]:
    return {env.cp.authority.kid: env.cp.authority.public_key}


# -- the two-person rule ----------------------------------------------------------------------------------------

def test_two_person_rule(env: Env) -> None:
    created = env.create(trigger=True)
    assert created["state"] == "pending_approval"
    assert created["triggered_by"] == "lan"
    assert created["body"] is None
    assert env.dispatcher.triggered == []
    alert_id = created["id"]

    refused = env.post(alert_id, "confirm", "lan", 403)  # the same person
    assert "two-person" in refused["detail"]
    env.post(alert_id, "confirm", "khe", 403)  # a NOC operator of another district: not their zones
    env.post(alert_id, "confirm", "duyet", 403)  # an approver: not a NOC operator or admin
    assert env.dispatcher.triggered == []
    assert env.client.get(f"/api/v1/alerts/{alert_id}", headers=env.as_("lan")).json()["state"] == "pending_approval"

    confirmed = env.post(alert_id, "confirm", "minh")
    assert confirmed["state"] == "active"
    assert (confirmed["triggered_by"], confirmed["approved_by"]) == ("lan", "minh")
    assert len(env.dispatcher.triggered) == 1
    assert env.post(alert_id, "confirm", "root", 409)["type"] == "/problems/conflict"  # no second dispatch
    assert len(env.dispatcher.triggered) == 1
    assert _audit_actions(env, alert_id) == [("alert.create", "lan"), ("alert.trigger", "lan"),
                                             ("alert.confirm", "minh"), ("alert.dispatch", "minh")]
    with env.cp.db.read() as conn:
        assert audit.verify(conn).ok


def test_an_admin_may_confirm_and_a_draft_cannot_be_confirmed(env: Env) -> None:
    draft = env.create()
    assert draft["state"] == "draft"
    env.post(draft["id"], "confirm", "minh", 409)
    env.post(draft["id"], "trigger", "minh")
    assert env.post(draft["id"], "confirm", "root")["state"] == "active"


def test_disabled_rule_triggers_at_once(db_url: str, tmp_path: Path) -> None:
    for env in _env(db_url, tmp_path, alerts_two_person=False):
        created = env.create(trigger=True)
        assert created["state"] == "active"
        assert created["triggered_by"] == created["approved_by"] == "lan"
        assert len(env.dispatcher.triggered) == 1
        second = env.create()
        assert env.post(second["id"], "trigger", "minh")["state"] == "active"
        env.cp.alert_dispatcher = None  # no broadcaster: refused before a draft is stored
        before = env.client.get("/api/v1/alerts", headers=env.as_("root")).json()["items"]
        response = env.client.post("/api/v1/alerts", headers=env.as_("lan"), json={
            "zones": ["20194"], "status": "actual", "content_id": CONTENT, "trigger": True})
        assert response.status_code == 409
        assert env.client.get("/api/v1/alerts", headers=env.as_("root")).json()["items"] == before


# -- signatures and status --------------------------------------------------------------------------------------

def test_the_signature_verifies_against_the_exported_authority_key(env: Env) -> None:
    exported = env.client.get("/api/v1/authority", headers=env.as_("lan")).json()
    public = base64.b64decode(exported["public_key"])
    assert public == env.cp.authority.public_key
    assert exported["kid"] == env.cp.authority.kid.hex()
    assert env.client.get("/api/v1/authority", headers=env.as_("nhin")).status_code == 403

    active = env.active(zones=["20194", "20227"], expires_in_s=1800, preroll_ms=8000)
    body, sig = base64.b64decode(active["body"]), base64.b64decode(active["sig"])
    now_ns = int(START.timestamp()) * 10**9
    with env.cp.db.read() as conn:
        path = zones.ancestors(conn, "20194-01")
    alert = verify_alert(body, sig, {bytes.fromhex(exported["kid"]): public}, now=now_ns, zone_path=path,
                         seen_ids=set())
    assert alert.zones == ("20194", "20227")
    assert (alert.cls, alert.lvl, alert.status) == (2, 2, "actual")  # emergency, by a province-scoped operator
    assert alert.issued == now_ns
    assert alert.expires - alert.issued == 1800 * 10**9
    assert alert.bid == active["bid"]
    assert alert.text == TEXT
    assert alert.id == active["wire_id"]
    assert active["level"] == "province"
    assert active["expires_at"] == "2025-09-01T01:30:00Z"
    sent = env.dispatcher.triggered[0]
    assert (sent["body"], sent["sig"], sent["zones"], sent["preroll_ms"], sent["text"]) == (
        body, sig, ("20194", "20227"), 8000, TEXT)
    assert sent["audio"] == alerts.AlertAudio(CONTENT, None, None)
    with env.cp.db.read() as conn, pytest.raises(WrongZoneError):
        verify_alert(body, sig, _trusted(env), now=now_ns, zone_path=zones.ancestors(conn, "20195"), seen_ids=set())


def test_an_exercise_is_never_dispatched_as_actual(env: Env) -> None:
    now_ns = int(START.timestamp()) * 10**9
    for status in ("exercise", "test"):
        active = env.active(status=status)
        assert active["status"] == status
        sent = env.dispatcher.triggered[-1]
        assert sent["status"] == status
        alert = verify_alert(sent["body"], sent["sig"], _trusted(env), now=now_ns, zone_path=("48", "490", "20194"),
                             seen_ids=set())
        assert alert.status == status
        assert not should_play(alert, exercise=False)  # a device in service does not play it
        assert should_play(alert, exercise=True)


def test_status_has_no_default(env: Env) -> None:
    response = env.client.post("/api/v1/alerts", headers=env.as_("lan"),
                               json={"zones": ["20194"], "content_id": CONTENT})
    assert response.status_code == 422
    assert "status" in response.text


# -- the ready cancel -------------------------------------------------------------------------------------------

class CheckingDispatcher(FakeDispatcher):
    """Records, at each cancel, what the database says about the alert at that moment."""

    def __init__(self, cp: ControlPlane) -> None:
        super().__init__()
        self.cp = cp
        self.state_at_cancel: list[str] = []

    def cancel(self, bid: int, body: bytes, sig: bytes) -> None:
        with self.cp.db.read() as conn:
            state = conn.execute(select(alerts_table.c.state).where(alerts_table.c.bid == bid)).scalar_one()
        self.state_at_cancel.append(state)
        super().cancel(bid, body, sig)


def test_cancel_is_signed_sent_first_and_needs_no_second_person(env: Env) -> None:
    checking = CheckingDispatcher(env.cp)
    env.cp.alert_dispatcher = checking
    active = env.active()
    started = time.perf_counter()
    cancelled = env.post(active["id"], "cancel", "lan")  # the operator who triggered it, alone
    elapsed = time.perf_counter() - started
    assert cancelled["state"] == "cancelled"
    assert cancelled["cancelled_by"] == "lan"
    assert checking.state_at_cancel == ["active"]  # sent before anything was written
    assert elapsed < 1.0
    bid, body, sig = checking.cancelled[0]
    assert bid == active["bid"]
    assert base64.b64decode(cancelled["cancel_body"]) == body
    cancel = verify_cancel(body, sig, _trusted(env), now=int(START.timestamp()) * 10**9)
    assert cancel.cancel == active["wire_id"]
    assert cancel.kid == env.cp.authority.kid
    assert _audit_actions(env, active["id"])[-1] == ("alert.cancel", "lan")
    env.post(active["id"], "cancel", "minh", 409)  # already cancelled
    with env.cp.db.read() as conn:
        ended = conn.execute(select(broadcast_log).where(broadcast_log.c.bid == bid)).one()
    assert (ended.kind, ended.end_reason, ended.title) == ("alert", "cancelled", "Bão số 3")


def test_cancel_withdraws_drafts_and_pending_alerts_without_signing(env: Env) -> None:
    pending = env.create(trigger=True)
    cancelled = env.post(pending["id"], "cancel", "lan")
    assert (cancelled["state"], cancelled["cancel_body"]) == ("cancelled", None)
    draft = env.create()
    assert env.post(draft["id"], "cancel", "minh")["state"] == "cancelled"
    env.post(draft["id"], "trigger", "minh", 409)
    assert env.dispatcher.cancelled == []


def test_cancel_during_dispatch_is_sent_again(env: Env) -> None:
    class Racing(FakeDispatcher):
        def trigger(self, body: bytes, sig: bytes, **kw: Any) -> int:
            alerts.cancel(env.cp.db, env.principal("root"), None, pending["id"], authority=env.cp.authority,
                          dispatcher=self)  # while this alert is still being sent
            return super().trigger(body, sig, **kw)

    racing = Racing()
    env.cp.alert_dispatcher = racing
    pending = env.create(trigger=True)
    result = env.post(pending["id"], "confirm", "minh")
    assert result["state"] == "cancelled"
    assert result["cancelled_by"] == "root"
    assert result["dispatch_error"] is not None  # the first cancel found no such broadcast yet...
    assert [c[0] for c in racing.cancelled] == [result["bid"]]  # ...so it was sent again once the alert was out
    actions = [a for a, _ in _audit_actions(env, pending["id"])]
    assert actions[-2:] == ["alert.cancel", "alert.dispatch"]


# -- failures and expiry ----------------------------------------------------------------------------------------

def test_a_failed_dispatch_is_recorded_and_can_be_retried(env: Env) -> None:
    env.dispatcher.fail = RuntimeError("streamer\nunreachable")
    pending = env.create(trigger=True)
    failed = env.post(pending["id"], "confirm", "minh")
    assert failed["state"] == "failed"
    assert failed["dispatch_error"] == "RuntimeError: streamer unreachable"
    first_wire, first_bid = failed["wire_id"], failed["bid"]
    again = env.post(pending["id"], "trigger", "lan")
    assert again["state"] == "pending_approval"  # the rule applies again
    active = env.post(pending["id"], "confirm", "minh")
    assert active["state"] == "active"
    assert active["dispatch_error"] is None
    assert active["wire_id"] != first_wire
    assert active["bid"] != first_bid


def test_without_a_broadcaster_confirm_changes_nothing(env: Env) -> None:
    pending = env.create(trigger=True)
    env.cp.alert_dispatcher = None
    with env.cp.db.read() as conn:
        head = audit.verify(conn).head_seq
    env.post(pending["id"], "confirm", "minh", 409)
    with env.cp.db.read() as conn:
        assert audit.verify(conn).head_seq == head
    assert env.client.get(f"/api/v1/alerts/{pending['id']}", headers=env.as_("lan")).json()["state"] == \
        "pending_approval"


def test_a_broadcaster_that_cannot_allocate_refuses_with_nothing_written(env: Env) -> None:
    class Full(FakeDispatcher):
        def allocate_bid(self) -> int:
            raise OverflowError("no broadcast id left")

    pending = env.create(trigger=True)
    env.cp.alert_dispatcher = Full()
    refused = env.post(pending["id"], "confirm", "minh", 409)
    assert "no broadcast id left" in refused["detail"]
    assert _audit_actions(env, pending["id"])[-1] == ("alert.trigger", "lan")


def test_expiry(env: Env) -> None:
    active = env.active(expires_in_s=600)
    env.clock.advance(seconds=599)
    assert alerts.expire_due(env.cp.db) == []
    env.clock.advance(seconds=1)
    shown = env.client.get(f"/api/v1/alerts/{active['id']}", headers=env.as_("lan")).json()
    assert shown["state"] == "expired"
    listed = env.client.get("/api/v1/alerts", params={"state": "expired"}, headers=env.as_("lan")).json()
    assert [a["id"] for a in listed["items"]] == [active["id"]]
    assert env.client.get("/api/v1/alerts", params={"state": "active"}, headers=env.as_("lan")).json()["items"] == []
    env.post(active["id"], "cancel", "lan", 409)
    assert alerts.expire_due(env.cp.db) == [active["id"]]
    assert alerts.expire_due(env.cp.db) == []
    assert _audit_actions(env, active["id"])[-1] == ("alert.expire", "system")
    with env.cp.db.read() as conn:
        row = conn.execute(select(broadcast_log).where(broadcast_log.c.bid == active["bid"])).one()
        assert audit.verify(conn).ok
    assert row.end_reason == "expired"
    assert row.ended_at == START + timedelta(seconds=600)


# -- scope, level, validation, listing --------------------------------------------------------------------------

def test_level_follows_the_author_scope(env: Env) -> None:
    assert env.create("xa")["level"] == "commune"
    assert env.create("huyen")["level"] == "district"
    assert env.create("lan")["level"] == "province"
    assert env.create("root")["level"] == "national"
    response = env.client.post("/api/v1/alerts", headers=env.as_("xa"), json={
        "zones": ["20194", "20195"], "status": "actual", "content_id": CONTENT})
    assert response.status_code == 403  # 20195 is outside the commune operator's scope


def test_who_sees_what(env: Env) -> None:
    mine = env.create("huyen")
    other = env.create("khe", zones=["20227"])
    assert env.client.get(f"/api/v1/alerts/{mine['id']}", headers=env.as_("nhin")).status_code == 200  # below it
    assert env.client.get(f"/api/v1/alerts/{mine['id']}", headers=env.as_("xa2")).status_code == 403
    seen = env.client.get("/api/v1/alerts", headers=env.as_("nhin")).json()["items"]
    assert [a["id"] for a in seen] == [mine["id"]]
    everything = env.client.get("/api/v1/alerts", params={"limit": 1}, headers=env.as_("root")).json()
    assert [a["id"] for a in everything["items"]] == [other["id"]]
    rest = env.client.get("/api/v1/alerts", params={"limit": 1, "cursor": everything["next_cursor"]},
                          headers=env.as_("root")).json()
    assert [a["id"] for a in rest["items"]] == [mine["id"]]
    assert rest["next_cursor"] is None
    in_zone = env.client.get("/api/v1/alerts", params={"zone": "491"}, headers=env.as_("root")).json()["items"]
    assert [a["id"] for a in in_zone] == [other["id"]]
    assert env.client.get("/api/v1/alerts", params={"zone": "491"}, headers=env.as_("nhin")).status_code == 403
    env.post(mine["id"], "trigger", "khe", 403)


INVALID: list[tuple[dict[str, Any], int]] = [
    ({"text": "ệ" * 200}, 422),  # 600 bytes of UTF-8
    ({"live_port": 5004}, 422),  # and content_id: two audio sources
    ({"content_id": None}, 422),  # no audio
    ({"content_id": None, "live_port": 5004, "library_item": 3}, 422),
    ({"zones": ["nowhere"]}, 404),
    ({"expires_in_s": 30}, 422),
    ({"text": "xin\x07chào"}, 422),
    ({"cls": "emergency"}, 422),  # the field is "class"
]


def test_invalid_drafts_are_refused_with_nothing_written(env: Env) -> None:
    for fields, status in INVALID:
        body = {"zones": ["20194"], "status": "actual", "content_id": CONTENT, **fields}
        response = env.client.post("/api/v1/alerts", json=body, headers=env.as_("lan"))
        assert response.status_code == status, (fields, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert env.client.get("/api/v1/alerts", headers=env.as_("root")).json()["items"] == []


def test_live_input_and_library_item(env: Env) -> None:
    live = env.active(content_id=None, live_port=5004, text=None)
    assert env.dispatcher.triggered[-1]["audio"] == alerts.AlertAudio(None, None, 5004)
    assert live["text"] is None
    stored = env.active(library_item=17, **{"class": "priority"})
    assert env.dispatcher.triggered[-1]["audio"] == alerts.AlertAudio(CONTENT, 17, None)
    assert stored["class"] == "priority"


def test_alert_events_reach_the_bus(env: Env) -> None:
    seen: list[Any] = []
    env.cp.db.publish = lambda events: seen.extend(e for e in events if e.topic == "alert")
    active = env.active()
    assert [(e.data["action"], e.data["state"]) for e in seen] == [
        ("alert.create", "draft"), ("alert.trigger", "pending_approval"), ("alert.confirm", "approved"),
        ("alert.dispatch", "active")]
    assert seen[-1].zones == ("48", "490", "20194")
    assert seen[-1].permission == "alerts.read"
    assert seen[-1].data["bid"] == active["bid"]


# -- editing drafts ---------------------------------------------------------------------------------------------

def _head(env: Env) -> int:
    with env.cp.db.read() as conn:
        return audit.verify(conn).head_seq


def test_a_draft_is_edited_field_by_field_and_audited(env: Env) -> None:
    draft = env.create(**{"class": "priority"}, expires_in_s=600)
    response = env.client.patch(f"/api/v1/alerts/{draft['id']}", headers=env.as_("minh"), json={
        "zones": ["20195", "20194", "20194"], "status": "exercise", "title": "Diễn tập bão", "preroll_ms": 3000})
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["zones"] == ["20194", "20195"]
    assert (edited["status"], edited["title"], edited["preroll_ms"]) == ("exercise", "Diễn tập bão", 3000)
    assert (edited["class"], edited["expires_in_s"], edited["text"]) == ("priority", 600, TEXT)  # left out: kept
    assert (edited["content_id"], edited["state"], edited["created_by"]) == (CONTENT, "draft", "lan")
    with env.cp.db.read() as conn:
        entry = audit.entries(conn, target=f"alert:{draft['id']}", limit=1)[0]
        assert audit.verify(conn).ok
    assert (entry.action, entry.actor) == ("alert.edit", "minh")
    assert entry.details["changes"] == {
        "zones": {"before": ["20194"], "after": ["20194", "20195"]},
        "status": {"before": "actual", "after": "exercise"},
        "title": {"before": "Bão số 3", "after": "Diễn tập bão"},
        "preroll_ms": {"before": 0, "after": 3000}}
    head = _head(env)
    same = env.client.patch(f"/api/v1/alerts/{draft['id']}", headers=env.as_("lan"), json={"status": "exercise"})
    assert same.status_code == 200
    assert _head(env) == head  # nothing changed: no audit entry
    live = env.client.patch(f"/api/v1/alerts/{draft['id']}", headers=env.as_("lan"),
                            json={"live_port": 5004, "text": None}).json()
    assert (live["content_id"], live["library_item"], live["live_port"], live["text"]) == (None, None, 5004, None)
    stored = env.client.patch(f"/api/v1/alerts/{draft['id']}", headers=env.as_("lan"),
                              json={"content_id": CONTENT, "library_item": 9}).json()
    assert (stored["content_id"], stored["library_item"], stored["live_port"]) == (CONTENT, 9, None)
    active = env.post(draft["id"], "trigger", "lan")
    assert env.post(active["id"], "confirm", "minh")["state"] == "active"
    sent = env.dispatcher.triggered[-1]
    assert sent["zones"] == ("20194", "20195")
    assert sent["status"] == "exercise"
    assert sent["audio"] == alerts.AlertAudio(CONTENT, 9, None)


def test_only_a_draft_or_failed_alert_can_be_edited(env: Env) -> None:
    pending = env.create(trigger=True)
    active = env.active(expires_in_s=600)
    cancelled = env.create()
    env.post(cancelled["id"], "cancel", "lan")
    expiring = env.active(expires_in_s=60)
    env.clock.advance(seconds=61)
    head = _head(env)
    for alert_id, state in ((pending["id"], "pending approval"), (active["id"], "active"),
                            (cancelled["id"], "cancelled"), (expiring["id"], "expired")):
        response = env.client.patch(f"/api/v1/alerts/{alert_id}", headers=env.as_("lan"), json={"text": "khác"})
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert f"alert {alert_id} is {state}:" in response.json()["detail"]
        assert response.json()["state"] == state.replace(" ", "_")
        assert env.client.get(f"/api/v1/alerts/{alert_id}", headers=env.as_("lan")).json()["text"] == TEXT
    assert _head(env) == head


def test_a_failed_alert_edited_returns_to_draft_and_is_signed_afresh(env: Env) -> None:
    env.dispatcher.fail = RuntimeError("streamer unreachable")
    pending = env.create(trigger=True)
    failed = env.post(pending["id"], "confirm", "minh")
    assert failed["state"] == "failed"
    edited = env.client.patch(f"/api/v1/alerts/{failed['id']}", headers=env.as_("lan"),
                              json={"text": "Bão đã đổi hướng: tiếp tục theo dõi thông báo."}).json()
    assert edited["state"] == "draft"
    for field in ("triggered_by", "approved_by", "wire_id", "kid", "bid", "body", "sig", "dispatch_error",
                  "issued_at", "expires_at"):
        assert edited[field] is None, field
    assert _audit_actions(env, failed["id"])[-1] == ("alert.edit", "lan")
    with env.cp.db.read() as conn:
        entry = audit.entries(conn, target=f"alert:{failed['id']}", limit=1)[0]
    assert entry.details["was"] == "failed"
    env.post(failed["id"], "confirm", "minh", 409)  # a draft again: the two-person rule starts over
    env.post(failed["id"], "trigger", "lan")
    active = env.post(failed["id"], "confirm", "minh")
    assert active["state"] == "active"
    assert active["bid"] != failed["bid"]
    sent = verify_alert(base64.b64decode(active["body"]), base64.b64decode(active["sig"]), _trusted(env),
                        now=int(START.timestamp()) * 10**9, zone_path=("48", "490", "20194"), seen_ids=set())
    assert sent.text == "Bão đã đổi hướng: tiếp tục theo dõi thông báo."


@pytest.mark.parametrize(("who", "body", "status"), [
    ("khe", {"text": "x"}, 403),                                   # the alert's zone is outside 491
    ("xa", {"zones": ["20194", "20227"]}, 403),                    # a new zone outside the editor's scope
    ("nhin", {"text": "x"}, 403),                                  # a viewer: no alerts.write
    ("lan", {"zones": []}, 422),
    ("lan", {"zones": ["nowhere"]}, 404),
    ("lan", {"content_id": CONTENT, "live_port": 5004}, 422),
    ("lan", {"library_item": 3}, 422),                             # a library item goes with its content id
    ("lan", {"live_port": 5004, "library_item": 3}, 422),
    ("lan", {"text": "đ" * 300}, 422),                             # 600 bytes of UTF-8
    ("lan", {"text": "a\x00b"}, 422),
    ("lan", {"expires_in_s": 10}, 422),
    ("lan", {"state": "active"}, 422),                             # not a field of a composition
    ("lan", {"status": "urgent"}, 422),
])
def test_edits_are_checked_and_refusals_change_nothing(env: Env, who: str, body: dict[str, Any], status: int) -> None:
    draft = env.create(who="xa")
    head = _head(env)
    response = env.client.patch(f"/api/v1/alerts/{draft['id']}", headers=env.as_(who), json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert _head(env) == head
    assert env.client.get(f"/api/v1/alerts/{draft['id']}", headers=env.as_("root")).json() == draft
    missing = env.client.patch("/api/v1/alerts/999999", headers=env.as_("lan"), json={"text": "x"})
    assert missing.status_code == 404


def test_the_domain_edit_refuses_fields_outside_a_composition(env: Env) -> None:
    draft = env.create()
    with pytest.raises(InvalidError, match="cannot be edited: bid"), env.cp.db.write() as tx:
        alerts.edit(tx, env.principal("lan"), None, draft["id"], {"bid": 7})
