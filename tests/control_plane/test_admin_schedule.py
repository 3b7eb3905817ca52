"""`loa admin schedule` against a real app: add, check, edit, delete, firings, and every failure as one line
(a conflict lists each conflicting entry) and exit 1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from _admin_env import START, Env, admin_env

from loa.control_plane.api.routes_library import store_of
from loa.control_plane.scheduler import Scheduler
from loa.control_plane.testing import FakeBroadcaster, library_item


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from admin_env(tmp_path)


def test_schedule_add_check_edit_delete(env: Env) -> None:
    item = library_item(env.cp, zone="490", title="Bản tin sáng")
    add = ("schedule", "add", str(item), "--zone", "20194", "--start", "2030-03-02 06:00", "--rrule",
           "FREQ=DAILY", "--duration-ms", "60000")
    (entry,) = env.rows("lich", *add)
    assert entry[1:] == ["enabled", "2030-03-02T06:00:00+07:00", "FREQ=DAILY", str(item), "20194", "Bản tin sáng"]
    entry_id = entry[0]

    checked = env.run("lich", "schedule", "check", str(item), "--zone", "20194-01", "--start", "2030-03-05 06:00:30")
    assert checked.exit_code == 1, checked.output
    lines = checked.stdout.splitlines()
    assert lines[0] == "1 conflicting entries within 14 days"
    assert lines[1].split("\t")[:4] == ["conflict", entry_id, "Bản tin sáng", "1 collisions"]
    assert lines[1].split("\t")[5] == "20194-01/20194"
    assert lines[2] == "next\t2030-03-05T06:00:30+07:00"
    clear = env.rows("lich", "schedule", "check", str(item), "--zone", "20195", "--start", "2030-03-05 06:00")
    assert clear[0] == ["ok: no conflicts"]
    assert env.json("lich", "schedule", "check", str(item), "--zone", "20195", "--start", "2030-03-05 06:00")["ok"]

    refused = env.run("lich", "schedule", "add", str(item), "--zone", "20194-01", "--start", "2030-03-05 06:00:30")
    assert refused.exit_code == 1
    first, *listed = refused.stderr.strip().splitlines()
    assert first.startswith("Error: 409 Schedule conflict: conflicts with 1 entry")
    assert listed[0].split("\t")[:2] == ["  conflict", entry_id]
    assert len(env.rows("lich", "schedule", "list")) == 1  # nothing saved
    forced = env.rows("lich", "schedule", "add", str(item), "--zone", "20194-01", "--start", "2030-03-05 06:00:30",
                      "--force", "--title", "Lặp lại", "--policy", "drop")
    assert forced[0][-1] == "Lặp lại"
    assert forced[1][:2] == ["conflict", entry_id]  # saved over the conflict, which is shown

    paris = env.rows("lich", "schedule", "add", str(item), "--zone", "20195", "--start", "2030-03-02 06:00",
                     "--tz", "Europe/Paris")[0]
    assert paris[2] == "2030-03-02T06:00:00+01:00"  # shown in the entry's own time zone
    assert [r[0] for r in env.rows("lich", "schedule", "list", "--zone", "20195")] == [paris[0]]

    edited = env.rows("lich", "schedule", "edit", entry_id, "--title", "Bản tin", "--once", "--disable")
    assert edited[0][1:4] == ["disabled", "-", "once"]
    shown = dict(line.split("\t", 1) for line in env.ok("xem", "schedule", "show", entry_id).splitlines())
    assert (shown["title"], shown["rrule"], shown["tz"], shown["start"]) == (
        "Bản tin", "-", "Asia/Ho_Chi_Minh", "2030-03-02T06:00:00")
    assert env.json("xem", "schedule", "show", entry_id) == env.api("xem", "GET", f"/api/v1/schedule/{entry_id}")
    assert env.ok("lich", "schedule", "delete", entry_id).strip() == f"deleted schedule entry {entry_id}"
    env.fails("lich", "schedule", "show", entry_id, status="404 Not found:")


def test_schedule_errors_are_one_line(env: Env) -> None:
    draft = library_item(env.cp, zone="490", state="draft")
    approved = library_item(env.cp, zone="490")
    base = ("--zone", "20194", "--start", "2030-03-02 06:00")
    line = env.fails("lich", "schedule", "add", str(draft), *base, status="409 Not approved:")
    assert f"{draft}" in line
    env.fails("xem", "schedule", "add", str(approved), *base, status="403 Forbidden:")
    env.fails("lich", "schedule", "add", str(approved), "--zone", "491", "--start", "2030-03-02 06:00",
              status="403 Forbidden:")
    env.fails("lich", "schedule", "add", str(approved), *base, "--rrule", "FREQ=SECONDLY",
              status="422 Invalid input:")
    env.fails("lich", "schedule", "add", str(approved), *base, "--tz", "Mars/Olympus", status="422 Invalid input:")
    env.fails("lich", "schedule", "add", str(approved), "--zone", "20194", "--start", "tomorrow",
              status="Error: Invalid value for --start", exit_code=2)
    env.fails("lich", "schedule", "add", "999999", *base, status="404 Not found:")
    env.fails("lich", "schedule", "edit", "999999", "--title", "x", status="404 Not found:")
    env.fails("lich", "schedule", "delete", "999999", status="404 Not found:")
    env.fails("lich", "schedule", "firings", "999999", status="404 Not found:")
    env.fails("lich", "schedule", "edit", "1", "--once", "--rrule", "FREQ=DAILY", status="Error: give --rrule or",
              exit_code=2)


def test_schedule_firings_show_what_the_scheduler_did(env: Env) -> None:
    item = library_item(env.cp, zone="490", kind="audio", duration_s=0.3, title="Nhạc hiệu")
    (entry,) = env.rows("lich", "schedule", "add", str(item), "--zone", "20194", "--start", "2030-03-01 08:05")
    broadcaster = FakeBroadcaster(first_bid=77)
    scheduler = Scheduler(env.cp.db, store_of(env.cp), broadcaster, clock=env.clock)
    env.clock.now = START + timedelta(minutes=5)
    assert len(scheduler.tick().started) == 1
    (firing,) = env.rows("xem", "schedule", "firings", entry[0])
    assert firing[:4] == ["2030-03-01T08:05:00+07:00", "started", str(item), "77"]
    assert env.json("xem", "schedule", "firings", entry[0])[0]["broadcasts"] == [77]
