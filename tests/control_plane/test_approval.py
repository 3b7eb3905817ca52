"""The approval workflow: the transition table against every state and event, reviews by someone other than the
author, reasons, edits returning items to draft, playlists, audit entries and events; over the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loa.control_plane import approval, audit, library
from loa.control_plane.approval import STATES, TRANSITIONS, NotApprovedError, WorkflowError
from loa.control_plane.auth import Actor
from loa.control_plane.errors import ForbiddenError, InvalidError
from loa.control_plane.events import Event
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, bearer, library_item

EVERY_EVENT = ("submit", "approve", "reject", "edit", "withdraw", "")


@pytest.mark.parametrize("state", [*STATES, "archived"])
@pytest.mark.parametrize("event", EVERY_EVENT)
def test_the_table_decides_every_state_and_event(state: str, event: str) -> None:
    allowed = TRANSITIONS.get(state, {})
    if event in allowed:
        assert approval.next_state(state, event) == allowed[event]
    else:
        with pytest.raises(WorkflowError) as caught:
            approval.next_state(state, event)
        assert caught.value.status == 409


def test_the_table_is_the_workflow() -> None:
    assert TRANSITIONS["draft"]["submit"] == "submitted"
    assert {TRANSITIONS["submitted"][e] for e in ("approve", "reject")} == {"approved", "rejected"}
    assert all(row["edit"] == "draft" for row in TRANSITIONS.values())  # any change needs a new approval
    reachable, frontier = {"draft"}, ["draft"]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()].values():
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(STATES)


@pytest.fixture
def events(cp: ControlPlane) -> list[Event]:
    seen: list[Event] = []
    publish = cp.db.publish

    def capture(batch: Sequence[Any]) -> None:
        seen.extend(batch)
        if publish is not None:
            publish(batch)

    cp.db.publish = capture
    return seen


def _transition(cp: ControlPlane, who: str, item: int, event: str, reason: str | None = None) -> library.ItemRecord:
    with cp.db.write() as tx:
        return approval.transition(tx, Actor(who, "192.0.2.1"), item, event, reason=reason)


def test_reviews_are_by_someone_else_and_audited(cp: ControlPlane, seed: Seed, events: list[Event]) -> None:
    seed.province()
    item = library_item(cp, zone="20194", state="draft", author="lan")
    _transition(cp, "lan", item, "submit")
    with pytest.raises(ForbiddenError, match="another user must approve"):
        _transition(cp, "lan", item, "approve")
    with pytest.raises(InvalidError, match="reason"):
        _transition(cp, "minh", item, "reject", "  ")
    rejected = _transition(cp, "minh", item, "reject", "Sai tên xã ")
    assert (rejected.state, rejected.reason, rejected.reviewed_by) == ("rejected", "Sai tên xã", "minh")
    with pytest.raises(WorkflowError, match="cannot be approved"):
        _transition(cp, "minh", item, "approve")
    _transition(cp, "lan", item, "submit")
    approved = _transition(cp, "minh", item, "approve")
    assert (approved.state, approved.reason, approved.reviewed_by) == ("approved", None, "minh")
    with cp.db.read() as conn:
        approval.broadcast_parts(conn, item)
        trail = [(e.action, e.actor, e.details.get("from"), e.details.get("to"))
                 for e in reversed(audit.entries(conn, target=f"item:{item}"))]
    assert trail == [("library.create", "lan", None, None), ("library.submit", "lan", "draft", "submitted"),
                     ("library.reject", "minh", "submitted", "rejected"),
                     ("library.submit", "lan", "rejected", "submitted"),
                     ("library.approve", "minh", "submitted", "approved")]
    changes = [(e.data["change"], e.data["state"]) for e in events if e.topic == "library.item"]
    assert changes == [("create", "draft"), ("submit", "submitted"), ("reject", "rejected"), ("submit", "submitted"),
                       ("approve", "approved")]
    assert all(e.zones == ("48", "490", "20194") and e.permission == "library.read" for e in events
               if e.topic == "library.item")


def test_editing_returns_an_item_to_draft(cp: ControlPlane, seed: Seed) -> None:
    seed.province()
    item = library_item(cp, zone="20194")
    with cp.db.write() as tx:
        same = library.edit(tx, Actor("lan"), item, title="Thông báo")  # no change, no new version
    assert (same.state, same.version) == ("approved", 1)
    with cp.db.write() as tx:
        edited = library.edit(tx, Actor("lan"), item, cls=1)
    assert (edited.state, edited.version, edited.class_name, edited.reviewed_by) == ("draft", 2, "priority", None)
    with cp.db.read() as conn, pytest.raises(NotApprovedError, match="draft, not approved"):
        approval.broadcast_parts(conn, item)
    with cp.db.read() as conn:
        [entry] = audit.entries(conn, action="library.edit")
    assert entry.details == {"before": {"class": "normal"}, "after": {"class": "priority"}, "version": 2,
                             "state": {"before": "approved", "after": "draft"}}


def test_playlists_need_approved_members(cp: ControlPlane, seed: Seed) -> None:
    seed.province()
    good = library_item(cp, zone="20194", kind="audio", duration_s=0.3)
    pending = library_item(cp, zone="20194", kind="audio", duration_s=0.4, state="submitted")
    with cp.db.write() as tx:
        playlist = library.create(tx, Actor("lan"), kind="playlist", title="Sáng", cls=0, lvl=0, zone="20194",
                                  members=[good, pending])
    with pytest.raises(NotApprovedError, match=f"{pending} \\(submitted\\)"):
        _transition(cp, "lan", playlist.id, "submit")
    _transition(cp, "minh", pending, "approve")
    _transition(cp, "lan", playlist.id, "submit")
    _transition(cp, "minh", playlist.id, "approve")
    with cp.db.read() as conn:
        _, parts = approval.broadcast_parts(conn, playlist.id)
    assert [(p.item_id, p.offset_ms) for p in parts] == [(good, 0), (pending, 300)]
    with cp.db.write() as tx:  # a member changes: the playlist can no longer be broadcast
        library.edit(tx, Actor("lan"), pending, title="Đã sửa")
    with cp.db.read() as conn, pytest.raises(NotApprovedError, match="holds items that are not approved"):
        approval.broadcast_parts(conn, playlist.id)


def test_the_workflow_over_the_api(cp: ControlPlane, seed: Seed, client: TestClient) -> None:
    seed.province()
    editor = bearer(seed.user("lan", "editor", "20194"))
    approver = bearer(seed.user("minh", "approver", "490"))
    outsider = bearer(seed.user("hoa", "approver", "491"))
    noc = bearer(seed.user("tuan", "noc", "48"))
    made = client.post("/api/v1/library/texts", headers=editor, json={"title": "Họp dân", "text": "Họp lúc 19 giờ"})
    item = made.json()["id"]
    assert client.post(f"/api/v1/library/{item}/approve", headers=approver).status_code == 409  # still a draft
    assert client.post(f"/api/v1/library/{item}/submit", headers=editor).json()["state"] == "submitted"
    assert client.post(f"/api/v1/library/{item}/approve", headers=editor).status_code == 403   # not an approver
    assert client.post(f"/api/v1/library/{item}/approve", headers=outsider).status_code == 403  # out of scope
    pending = client.get("/api/v1/library", headers=approver, params={"state": "submitted"}).json()["items"]
    assert [i["id"] for i in pending] == [item]
    rejected = client.post(f"/api/v1/library/{item}/reject", headers=approver, json={"reason": "Thiếu địa điểm"})
    assert (rejected.json()["state"], rejected.json()["reason"]) == ("rejected", "Thiếu địa điểm")
    assert client.post(f"/api/v1/library/{item}/reject", headers=approver, json={}).status_code == 422
    edited = client.patch(f"/api/v1/library/{item}", headers=editor, json={"text": "Họp lúc 19 giờ tại nhà văn hoá"})
    assert (edited.json()["state"], edited.json()["reason"]) == ("draft", None)
    client.post(f"/api/v1/library/{item}/submit", headers=editor)
    approved = client.post(f"/api/v1/library/{item}/approve", headers=approver)
    assert (approved.json()["state"], approved.json()["reviewed_by"]) == ("approved", "minh")

    own = client.post("/api/v1/library/texts", headers=noc, json={"title": "NOC", "text": "Kiểm tra"}).json()["id"]
    client.post(f"/api/v1/library/{own}/submit", headers=noc)
    refused = client.post(f"/api/v1/library/{own}/approve", headers=noc)
    assert refused.status_code == 403
    assert "another user must approve" in refused.json()["detail"]
