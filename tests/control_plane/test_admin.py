"""`loa admin` as a whole: device status against a real app (the API in-process), and the help of every command
without a server. The command groups have their own tests: test_admin_library.py, test_admin_schedule.py,
test_admin_alerts.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _admin_env import Env, admin_env
from click.testing import CliRunner

from loa.control_plane import devices
from loa.control_plane.admin import admin


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from admin_env(tmp_path)


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
