"""/api/v1/broadcasts: going live and relaying to zones of one's scope, stopping, and the broadcast log."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from loa.control_plane import asplayed, audit
from loa.control_plane.db.schema import broadcast_log
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import FakeLive, Seed, bearer

URL = "http://127.0.0.1:9/live.mp3"


@pytest.fixture
def live(cp: ControlPlane, seed: Seed) -> FakeLive:
    seed.province()
    cp.live = FakeLive(cp)
    return cp.live


def _start(client: Any, token: str, **body: Any) -> Any:
    return client.post("/api/v1/broadcasts", headers=bearer(token),
                       json={"zones": ["20194"], "title": "Đài tỉnh", **body})


def test_a_relay_and_a_live_input_start_are_logged_audited_and_stop(client: Any, cp: ControlPlane, seed: Seed,
                                                                      live: FakeLive) -> None:
    token = seed.user("xa", "scheduler", "20194")
    relay = _start(client, token, url=URL, policy="drop")
    assert relay.status_code == 201, relay.text
    body = relay.json()
    assert (body["kind"], body["class"], body["level"], body["listen"]) == ("relay", "normal", "commune", None)
    assert live.started[-1]["policy"] == "drop"
    assert live.started[-1]["source"].url == URL
    mic = _start(client, token, port=0, **{"class": "priority"})
    assert mic.status_code == 201, mic.text
    assert mic.json()["listen"] == "127.0.0.1:40000"
    active = client.get("/api/v1/broadcasts", headers=bearer(token), params={"active": True}).json()["items"]
    assert {b["bid"] for b in active} == {body["bid"], mic.json()["bid"]}
    stopped = client.post(f"/api/v1/broadcasts/{body['bid']}/stop", headers=bearer(token))
    assert stopped.status_code == 200, stopped.text
    again = client.post(f"/api/v1/broadcasts/{body['bid']}/stop", headers=bearer(token))
    assert again.status_code == 409
    assert "already ended" in again.json()["detail"]
    with cp.db.read() as conn:
        actions = [e.action for e in audit.entries(conn, limit=20)]
    assert actions.count("broadcast.start") == 2
    assert actions.count("broadcast.stop") == 1
    one = client.get(f"/api/v1/broadcasts/{body['bid']}", headers=bearer(token)).json()
    assert one["end_reason"] == "stopped"


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"url": URL, "class": "emergency"}, 422, "class"),
    ({"url": URL, "port": 5004}, 422, "either port"),
    ({}, 422, "either port"),
    ({"url": "file:///etc/passwd"}, 422, "stream URL"),
    ({"url": "concat:a|b"}, 422, "stream URL"),
    ({"url": URL, "zones": ["491"]}, 403, ""),
    ({"url": URL, "zones": ["nowhere"]}, 404, "nowhere"),
])
def test_bad_requests_are_refused_with_nothing_started(client: Any, seed: Seed, live: FakeLive, body: dict[str, Any],
                                                       status: int, says: str) -> None:
    token = seed.user("huyen", "noc", "490")
    response = _start(client, token, **body)
    assert response.status_code == status, response.text
    assert says in response.text
    assert live.started == []


def test_alerts_end_by_their_cancel_and_no_streamer_is_a_conflict(client: Any, cp: ControlPlane, seed: Seed,
                                                                   live: FakeLive) -> None:
    token = seed.user("tinh", "noc")
    with cp.db.write() as tx:
        asplayed.broadcast_started(tx, asplayed.BroadcastStart(bid=77, kind="alert", zones=("48",), at=tx.now,
                                                               cls=2, lvl=2, title="Bão"))
    response = client.post("/api/v1/broadcasts/77/stop", headers=bearer(token))
    assert response.status_code == 409
    assert "cancel" in response.json()["detail"]
    cp.live = None
    response = _start(client, token, url=URL)
    assert response.status_code == 409
    assert "no streamer" in response.json()["detail"]
    with cp.db.read() as conn:
        assert len(conn.execute(select(broadcast_log)).all()) == 1


def test_the_log_shows_broadcasts_in_or_above_ones_scope(client: Any, cp: ControlPlane, seed: Seed,
                                                         live: FakeLive) -> None:
    from loa.control_plane.dataplane import LiveSource

    mine, province, other = (live.start_live(LiveSource(url=URL), [zone], cls=0, lvl=0, policy="resume",
                                             title=zone)[0] for zone in ("20194-01", "48", "491"))
    token = seed.user("to", "viewer", "20194")
    seen = {b["bid"] for b in client.get("/api/v1/broadcasts", headers=bearer(token)).json()["items"]}
    assert seen == {mine, province}
    assert client.get(f"/api/v1/broadcasts/{other}", headers=bearer(token)).status_code == 403
    page = client.get("/api/v1/broadcasts", headers=bearer(seed.user("root", "admin")), params={"limit": 2}).json()
    assert len(page["items"]) == 2
    rest = client.get("/api/v1/broadcasts", headers=bearer(seed.user("root2", "admin")),
                      params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [b["bid"] for b in page["items"] + rest["items"]] == [other, province, mine]
