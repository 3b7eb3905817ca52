"""`loa admin alerts` against a real app: compose, edit, trigger, confirm (two people), cancel, and every
failure as one line and exit 1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _admin_env import Env, admin_env

from loa.control_plane.testing import library_item


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from admin_env(tmp_path)


def test_alert_compose_edit_trigger_confirm_cancel(env: Env) -> None:
    audio = library_item(env.cp, zone="48", kind="audio", duration_s=0.3)
    created = env.run("lan", "alerts", "create", "--zone", "20194", "--status", "exercise", "--item", str(audio),
                      "--text", "Diễn tập sơ tán", "--title", "Diễn tập bão")
    assert created.exit_code == 0, created.output
    row = created.stdout.strip().split("\t")
    alert_id = row[0]
    assert row[1:] == ["draft", "exercise", "emergency", "province", "20194", f"item:{audio}", "Diễn tập bão"]
    assert f"alert {alert_id} is draft: trigger it: loa admin alerts trigger {alert_id}" in created.stderr

    edited = env.rows("minh", "alerts", "edit", alert_id, "--zone", "20194", "--zone", "20195", "--class",
                      "priority", "--live-port", "5004", "--no-text")
    assert edited[0][1:7] == ["draft", "exercise", "priority", "province", "20194,20195", "live:5004"]
    alert = env.json("lan", "alerts", "show", alert_id)
    assert (alert["text"], alert["content_id"], alert["live_port"]) == (None, None, 5004)

    triggered = env.run("lan", "alerts", "trigger", alert_id)
    assert triggered.stdout.split("\t")[1] == "pending_approval"
    assert f"loa admin alerts confirm {alert_id}" in triggered.stderr
    line = env.fails("lan", "alerts", "confirm", alert_id, status="403 Forbidden:")
    assert "two-person rule" in line
    line = env.fails("lan", "alerts", "edit", alert_id, "--text", "khác", status="409 Conflict:")
    assert f"alert {alert_id} is pending approval:" in line
    assert env.rows("minh", "alerts", "confirm", alert_id)[0][1] == "active"
    assert env.dispatcher.triggered[-1]["zones"] == ("20194", "20195")
    assert [r[0] for r in env.rows("xem", "alerts", "list", "--state", "active")] == [alert_id]
    shown = dict(line.split("\t", 1) for line in env.ok("xem", "alerts", "show", alert_id).splitlines())
    assert (shown["signed"], shown["approved_by"], shown["triggered_by"]) == ("yes", "minh", "lan")
    assert shown["expires_at"].endswith("+07:00")
    assert "body" not in shown
    active_bid = env.json("xem", "alerts", "show", alert_id)["bid"]
    assert env.rows("lan", "alerts", "cancel", alert_id)[0][1] == "cancelled"
    assert [c[0] for c in env.dispatcher.cancelled] == [active_bid]  # a signed cancel went out
    assert env.json("xem", "alerts", "show", alert_id) == env.api("xem", "GET", f"/api/v1/alerts/{alert_id}")

    at_once = env.rows("root", "alerts", "create", "--zone", "491", "--status", "test", "--content-id", "ab" * 32,
                       "--trigger")
    assert at_once[0][1:5] == ["pending_approval", "test", "emergency", "national"]
    assert len(env.rows("xem", "alerts", "list")) == 1  # a viewer in 20194 sees only alerts for its area
    assert {r[0] for r in env.rows("root", "alerts", "list")} == {alert_id, at_once[0][0]}


def test_alert_errors_are_one_line(env: Env) -> None:
    text_item = library_item(env.cp, zone="48")
    base = ("alerts", "create", "--zone", "20194", "--status", "actual")
    line = env.fails("lan", *base, "--item", str(text_item), status="Error: library item")
    assert line == f"Error: library item {text_item} is text, not audio"
    env.fails("lan", *base, "--item", "999999", status="404 Not found:")
    env.fails("lan", *base, "--live-port", "5004", "--content-id", "ab" * 32, status="Error: give one audio source",
              exit_code=2)
    env.fails("lan", *base, status="Error: give the audio", exit_code=2)
    env.fails("lan", "alerts", "create", "--zone", "20194", "--live-port", "5004",
              status="Error: Missing option '--status'", exit_code=2)
    env.fails("xem", *base, "--live-port", "5004", status="403 Forbidden:")
    env.fails("lan", *base, "--content-id", "not-a-hash", status="422 Invalid input:")
    env.fails("lan", *base, "--live-port", "5004", "--text", "đ" * 300, status="422 Invalid input:")
    env.fails("lan", "alerts", "create", "--zone", "nowhere", "--status", "actual", "--live-port", "5004",
              status="404 Not found:")
    env.fails("lan", "alerts", "show", "999999", status="404 Not found:")
    env.fails("lan", "alerts", "trigger", "999999", status="404 Not found:")
    env.fails("lan", "alerts", "edit", "1", "--text", "a", "--no-text", status="Error: give --text or --no-text",
              exit_code=2)
    env.cp.alert_dispatcher = None
    draft = env.rows("lan", *base, "--live-port", "5004")[0][0]
    env.ok("lan", "alerts", "trigger", draft)
    line = env.fails("minh", "alerts", "confirm", draft, status="409 Conflict:")
    assert "no broadcaster" in line
