"""`loa admin` for the everyday tasks (library, playlists, schedule, alerts, device status), each command run
against a real app (the API in-process, through the same HTTP client calls), with its error paths: every
failure is one line (status, title, detail) and exit 1."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from loa.control_plane import devices
from loa.control_plane.admin import admin
from loa.control_plane.api import create_app
from loa.control_plane.api.routes_library import store_of
from loa.control_plane.scheduler import Scheduler
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import FakeBroadcaster, FakeDispatcher, Seed, fast_settings, library_item, wav_bytes

START = datetime(2030, 3, 1, 1, 0, tzinfo=UTC)  # 08:00 in Asia/Ho_Chi_Minh
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
USERS = (("root", "admin", None), ("lan", "noc", "48"), ("minh", "noc", "48"), ("ed", "editor", "490"),
         ("duyet", "approver", "490"), ("lich", "scheduler", "490"), ("xem", "viewer", "20194"))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Env:
    cp: ControlPlane
    client: TestClient
    seed: Seed
    clock: Clock
    dispatcher: FakeDispatcher
    tokens: dict[str, str]
    tmp: Path

    def run(self, who: str | None, *args: str, stdin: str | None = None) -> Result:
        token = ["--token", self.tokens[who]] if who else []
        return CliRunner().invoke(admin, [*token, *args], obj={"client": self.client}, input=stdin)

    def ok(self, who: str, *args: str, stdin: str | None = None) -> str:
        result = self.run(who, *args, stdin=stdin)
        assert result.exit_code == 0, result.output
        return result.stdout

    def rows(self, who: str, *args: str) -> list[list[str]]:
        return [line.split("\t") for line in self.ok(who, *args).splitlines()]

    def json(self, who: str, *args: str) -> Any:
        return json.loads(self.ok(who, "--json", *args))

    def fails(self, who: str | None, *args: str, status: str, exit_code: int = 1) -> str:
        """The one error line (its status and title checked), for a command that must fail."""
        result = self.run(who, *args)
        assert result.exit_code == exit_code, result.output
        assert "Traceback" not in result.output
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        line = next(x for x in lines if x.startswith("Error:")) if exit_code == 2 else lines[0]
        assert line.startswith(status if status.startswith("Error:") else f"Error: {status}"), result.stderr
        return line

    def api(self, who: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers={"Authorization": f"Bearer {self.tokens[who]}"},
                                       **kwargs)
        assert response.status_code < 300, response.text
        return response.json()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = Clock(START)
    cp = ControlPlane(fast_settings(tmp_path / "data", clock=clock))
    dispatcher = FakeDispatcher()
    cp.alert_dispatcher = dispatcher
    seed = Seed(cp)
    seed.province()
    tokens = {name: seed.user(name, role, scope) for name, role, scope in USERS}
    with TestClient(create_app(control_plane=cp)) as client:
        yield Env(cp, client, seed, clock, dispatcher, tokens, tmp_path)
    cp.close()


def _file(env: Env, name: str, data: bytes) -> str:
    path = env.tmp / name
    path.write_bytes(data)
    return str(path)


# -- library and playlists --------------------------------------------------------------------------------------

def test_library_upload_submit_approve_reject_delete(env: Env) -> None:
    wav = _file(env, "ban-tin-sang.wav", wav_bytes(0.5))
    (audio,) = env.rows("ed", "library", "upload", wav, "--class", "priority", "--zone", "20194")
    assert audio[1:7] == ["audio", "draft", "priority", "district", "20194", "0.5s"]  # level: the author's
    assert audio[7] == "ban-tin-sang"  # the title defaults to the file's name
    (image,) = env.rows("ed", "library", "image", _file(env, "bang.png", PNG), "--title", "Bảng tin")
    assert image[1:4] == ["image", "draft", "normal"]
    assert image[5:] == ["490", "-", "Bảng tin"]  # owner zone: the editor's scope
    (text,) = env.rows("ed", "library", "text", "Họp tổ", "Họp tổ dân phố lúc 19 giờ.")
    piped = env.ok("ed", "--json", "library", "text", "Tiêm chủng", "-", "--level", "commune",
                   stdin="Tiêm chủng mở rộng\nsáng thứ Bảy\n")
    assert json.loads(piped)["text"] == "Tiêm chủng mở rộng\nsáng thứ Bảy"  # TEXT "-": read from standard input

    audio_id, image_id, text_id = int(audio[0]), int(image[0]), int(text[0])
    listed = env.rows("ed", "library", "list")
    assert {int(r[0]) for r in listed} >= {audio_id, image_id, text_id}
    assert all(len(r) == 8 for r in listed)  # one row per item, always the same columns
    assert [r[0] for r in env.rows("ed", "library", "list", "--kind", "audio")] == [str(audio_id)]

    assert env.rows("ed", "library", "submit", str(audio_id))[0][2] == "submitted"
    assert env.rows("duyet", "library", "approve", str(audio_id))[0][2] == "approved"
    env.ok("ed", "library", "submit", str(text_id))
    assert env.rows("duyet", "library", "reject", str(text_id), "--reason", "Sai giờ họp")[0][2] == "rejected"
    shown = dict(line.split("\t", 1) for line in env.ok("ed", "library", "show", str(text_id)).splitlines())
    assert (shown["state"], shown["reason"], shown["reviewed_by"]) == ("rejected", "Sai giờ họp", "duyet")
    assert shown["reviewed_at"].endswith("+07:00")  # shown in Asia/Ho_Chi_Minh
    assert env.json("ed", "library", "show", str(audio_id)) == env.api("ed", "GET", f"/api/v1/library/{audio_id}")
    assert [r[0] for r in env.rows("ed", "library", "list", "--state", "approved")] == [str(audio_id)]

    assert env.ok("ed", "library", "delete", str(image_id)).strip() == f"deleted library item {image_id}"
    env.fails("ed", "library", "show", str(image_id), status="404 Not found:")


def test_library_errors_are_one_line(env: Env) -> None:
    (text,) = env.rows("ed", "library", "text", "Họp tổ", "Họp tổ dân phố lúc 19 giờ.")
    line = env.fails("ed", "library", "upload", _file(env, "not-audio.wav", b"RIFF this is no audio at all"),
                     status="422 Invalid input:")
    assert "'not-audio.wav' is not usable audio" in line
    line = env.fails("ed", "library", "image", _file(env, "broken.png", PNG[:30]), status="422 Invalid input:")
    assert "broken.png" in line
    env.fails("ed", "library", "upload", str(env.tmp / "missing.wav"), status="Error: Invalid value", exit_code=2)
    env.fails("ed", "library", "approve", text[0], status="403 Forbidden:")        # an editor does not approve
    owned = env.rows("lan", "library", "text", "Của Lan", "Nội dung")[0][0]
    env.ok("lan", "library", "submit", owned)
    line = env.fails("lan", "library", "approve", owned, status="403 Forbidden:")  # never one's own item
    assert "\n" not in line
    env.fails("xem", "library", "text", "Tiêu đề", "Nội dung", status="403 Forbidden:")
    env.fails("ed", "library", "submit", "999999", status="404 Not found:")
    env.fails("ed", "library", "reject", text[0], status="Error: Missing option '--reason'", exit_code=2)
    env.fails(None, "library", "list", status="401 Authentication required:")
    env.fails("ed", "library", "text", "", "x", status="422 Invalid input:")


def test_playlists_create_and_list(env: Env) -> None:
    first = library_item(env.cp, zone="490", kind="audio", duration_s=0.3, state="approved")
    second = library_item(env.cp, zone="490", kind="audio", duration_s=0.4, state="draft")
    (row,) = env.rows("ed", "playlists", "create", "Buổi sáng", str(second), str(first))
    assert row[1:3] == ["playlist", "draft"]
    listed = env.rows("xem", "playlists", "list")
    assert [(r[0], r[-1]) for r in listed] == [(row[0], f"{second},{first}")]  # members in playing order
    assert env.json("xem", "playlists", "list")[0]["members"] == [second, first]
    line = env.fails("ed", "playlists", "create", "Sai", str(first), "999999", status="404 Not found:")
    assert "999999" in line
    env.fails("ed", "playlists", "create", "Trống", status="Error: Missing argument", exit_code=2)


# -- schedule ---------------------------------------------------------------------------------------------------

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


# -- alerts -----------------------------------------------------------------------------------------------------

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


# -- devices ----------------------------------------------------------------------------------------------------

def test_devices_status(env: Env) -> None:
    quiet = env.seed.device("20194-01", name="Loa chợ")
    faulty = env.seed.device("20194-02", name="Loa đình")
    with env.cp.db.write() as tx:
        devices.record_status(tx, faulty, online=True, status={"faults": ["amp"], "rssi_dbm": -71}, reason="hello")
    with env.cp.db.write() as tx:
        devices.record_status(tx, faulty, online=False, reason="timeout")
    with env.cp.db.write() as tx:
        devices.record_status(tx, faulty, online=True, reason="hello")
    rows = {r[0]: r for r in env.rows("xem", "devices", "status")}
    assert rows[quiet][1:] == ["offline", "ok", "-", "-", "Loa chợ"]
    assert rows[faulty][1:3] == ["online", "amp"]
    assert rows[faulty][3] == rows[faulty][4] == "2030-03-01T08:00:00+07:00"
    assert [r[0] for r in env.rows("xem", "devices", "status", "--faulty")] == [faulty]
    assert [r[0] for r in env.rows("xem", "devices", "status", "--offline")] == [quiet]
    one = env.rows("lan", "devices", "status", faulty, "--history", "5")
    fields = {r[0]: r[1:] for r in one if r[0] != "history"}
    assert fields["status.faults"] == ["amp"]
    assert fields["status.rssi_dbm"] == ["-71"]
    assert fields["online"] == ["yes"]
    assert [r[2:] for r in one if r[0] == "history"] == [["online", "hello"], ["offline", "timeout"],
                                                        ["online", "hello"]]
    data = env.json("lan", "devices", "status", faulty, "--history", "2")
    assert data["status"] == {"faults": ["amp"], "rssi_dbm": -71}
    assert len(data["history"]) == 2
    assert env.json("lan", "devices", "status", faulty) == env.api("lan", "GET", f"/api/v1/devices/{faulty}")
    env.fails("lan", "devices", "status", "0123456789abcdef", status="404 Not found:")
    env.fails("lan", "devices", "status", "not-an-id", status="422 Invalid input:")
    outside = env.seed.device("491", name="Ngoài")
    env.fails("xem", "devices", "status", outside, status="403 Forbidden:")


def test_help_of_every_new_command_works_without_a_server() -> None:
    groups = {"library": ["list", "show", "upload", "image", "text", "submit", "approve", "reject", "delete"],
              "playlists": ["create", "list"],
              "schedule": ["list", "show", "add", "check", "edit", "delete", "firings"],
              "alerts": ["list", "show", "create", "edit", "trigger", "confirm", "cancel"],
              "devices": ["status"]}
    for group, commands in groups.items():
        for command in commands:
            result = CliRunner().invoke(admin, [group, command, "--help"])
            assert result.exit_code == 0, (group, command, result.output)
