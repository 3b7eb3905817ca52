"""`loa serve` and `loa fleet` as separate processes on loopback: 200 devices in 20 hamlets of 4 communes.

An editor uploads an mp3, an approver approves it, a scheduler schedules it daily; at the slot every device
reports it played it from the slot's instant (the fleet's devices only count, so this checks delivery and
timing reports; playout accuracy is measured by test_sync_e2e and `loa bench sync`). A NOC operator triggers an
emergency for one commune, a second operator confirms it; that commune's devices preempt the programme, the
others keep it; the as-played report shows both; `loa audit verify` passes over every step.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from _serve import Serve, serving, spawn

from loa.devices.fleet import load_fleet_keys
from loa.protocol.noise import x25519_public

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMMUNES = 4
HAMLETS_PER_COMMUNE = 5
DEVICES = 200
PASSWORD = "mật khẩu đủ dài 2026"
PROGRAMME_S = 40


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Api:
    def __init__(self, base: str) -> None:
        self.client = httpx2.Client(base_url=base, timeout=60.0)

    def close(self) -> None:
        self.client.close()

    def login(self, username: str, password: str) -> str:
        response = self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def call(self, token: str, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Serve, Api, dict[str, str]]]:
    with serving(tmp_path / "data") as server:
        api = Api(server.api)
        info = {"udp": server.udp, "server_key": server.server_key, "authority": server.authority,
                "password": server.first_password(), "data": str(tmp_path / "data")}
        try:
            yield server, api, info
        finally:
            api.close()


def _province_csv() -> str:
    rows = ["code,name,parent,level", "48,Thành phố Đà Nẵng,,province", "490,Quận Liên Chiểu,48,district"]
    for c in range(COMMUNES):
        rows.append(f"C{c},Phường {c},490,commune")
        rows.extend(f"C{c}-H{h},Tổ dân phố {h},C{c},hamlet" for h in range(HAMLETS_PER_COMMUNE))
    return "\n".join(rows) + "\n"


def _mp3(path: Path) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:  # the test command installs it; without it this test cannot make its upload
        pytest.fail("ffmpeg is not installed (./dev.sh test installs it)")
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", f"sine=frequency=523:duration={PROGRAMME_S}",
                    "-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k", str(path)], check=True, timeout=60)
    return path


def test_two_hundred_devices_play_the_schedule_and_one_commune_takes_the_alert(
        site: tuple[Serve, Api, dict[str, str]], tmp_path: Path) -> None:
    _, api, info = site
    # The first administrator changes the one-time password, then creates the people of the story.
    token = api.login("admin", info["password"])
    api.call(token, "POST", "/api/v1/auth/password", 204, json={"current": info["password"], "new": PASSWORD})
    admin = api.login("admin", PASSWORD)
    api.call(admin, "POST", "/api/v1/zones/import", files={"file": ("tinh.csv", _province_csv().encode(), "text/csv")})
    people = {"bien-tap": ("editor", "490"), "duyet": ("approver", "490"), "lich": ("scheduler", "490"),
              "noc1": ("noc", None), "noc2": ("noc", None)}
    tokens = {}
    for name, (role, scope) in people.items():
        api.call(admin, "POST", "/api/v1/users", 201, json={"username": name, "role": role, "scope": scope,
                                                            "password": PASSWORD})
        tokens[name] = api.login(name, PASSWORD)

    # 200 device keys, enrolled 10 per hamlet; the fleet runs them in another process.
    keys_dir = tmp_path / "fleet"
    keys = load_fleet_keys(keys_dir, DEVICES)
    hamlets = [f"C{c}-H{h}" for c in range(COMMUNES) for h in range(HAMLETS_PER_COMMUNE)]
    zone_of: dict[str, str] = {}
    for i, private in enumerate(keys):
        public = base64.b64encode(x25519_public(private)).decode()
        device = api.call(admin, "POST", "/api/v1/devices", 201, json={
            "public_key": public, "kind": "speaker", "zone": hamlets[i % len(hamlets)], "name": f"cụm loa {i}"})
        zone_of[device["id"]] = hamlets[i % len(hamlets)]
    fleet = spawn("fleet", "--count", str(DEVICES), "--server", info["udp"], "--server-key", info["server_key"],
                  "--keys-dir", str(keys_dir), "--authority-key", info["authority"], "--start-rate", "400",
                  "--offset-max", "2", "--drift-max", "50", "--status-every", "2")
    try:
        def online() -> bool:
            page = api.call(admin, "GET", "/api/v1/devices", params={"limit": 1000})
            return sum(d["online"] for d in page["items"]) == DEVICES

        wait_until(online, 90, "all 200 devices online in the control plane")

        # Editor uploads, approver approves, scheduler schedules daily from a slot 25 s ahead.
        item = api.call(tokens["bien-tap"], "POST", "/api/v1/library/audio", 201,
                        files={"file": ("ban-tin.mp3", _mp3(tmp_path / "ban-tin.mp3").read_bytes(), "audio/mpeg")},
                        data={"title": "Bản tin sáng", "zone": "490"})
        api.call(tokens["bien-tap"], "POST", f"/api/v1/library/{item['id']}/submit")
        api.call(tokens["duyet"], "POST", f"/api/v1/library/{item['id']}/approve")
        slot = (datetime.now(UTC) + timedelta(seconds=25)).replace(microsecond=0)
        entry = api.call(tokens["lich"], "POST", "/api/v1/schedule", 201, json={
            "title": "Bản tin sáng hằng ngày", "item": item["id"], "zones": ["490"],
            "start": slot.isoformat(), "tz": "UTC", "rrule": "FREQ=DAILY"})
        entry_id = entry["entry"]["id"] if "entry" in entry else entry["id"]

        def played_rows(**params: Any) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            cursor = None
            while True:
                page = api.call(admin, "GET", "/api/v1/reports/as-played",
                                params={"limit": 1000, **params, **({"cursor": cursor} if cursor else {})})
                rows.extend(page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    return rows

        def programme_everywhere() -> list[dict[str, Any]] | None:
            rows = played_rows(kind="scheduled")
            return rows if len({r["device"] for r in rows}) == DEVICES else None

        rows = wait_until(programme_everywhere, 60, "every device playing the scheduled programme")
        firings = api.call(admin, "GET", f"/api/v1/schedule/{entry_id}/firings")["items"]
        assert [f["status"] for f in firings] == ["started"]
        bid = rows[0]["bid"]
        assert {r["bid"] for r in rows} == {bid}
        starts = [datetime.fromisoformat(r["started_at"]) for r in rows]
        assert max(starts) - min(starts) <= timedelta(milliseconds=5), (min(starts), max(starts))
        assert abs(min(starts) - slot) <= timedelta(milliseconds=5)

        # Ten seconds in, the NOC sounds an emergency for commune C1; a second operator confirms it.
        time.sleep(max(0.0, (slot + timedelta(seconds=10) - datetime.now(UTC)).total_seconds()))
        alert = api.call(tokens["noc1"], "POST", "/api/v1/alerts", 201, json={
            "zones": ["C1"], "status": "actual", "content_id": item["content_id"], "library_item": item["id"],
            "title": "Bão số 5: sơ tán khẩn cấp", "text": "Bão số 5: sơ tán ngay", "trigger": True})
        assert alert["state"] == "pending_approval"
        confirmed = api.call(tokens["noc2"], "POST", f"/api/v1/alerts/{alert['id']}/confirm")
        assert confirmed["state"] == "active", confirmed

        in_c1 = {d for d, z in zone_of.items() if z.startswith("C1-")}

        def preempted() -> list[dict[str, Any]] | None:
            rows = played_rows(kind="alert")
            return rows if {r["device"] for r in rows} == in_c1 else None

        wait_until(preempted, 30, "the 50 devices of C1 playing the alert")
        scheduled = {r["device"]: r for r in played_rows(kind="scheduled")}
        for device, row in scheduled.items():
            if device in in_c1:
                assert row["end_reason"] == "preempted", row
                assert row["interrupted_by_bid"] == confirmed["bid"], row
            else:
                assert row["ongoing"], row  # the other communes keep the programme
        assert len(in_c1) == DEVICES // COMMUNES
    finally:
        fleet.stop()
    verify = subprocess.run([sys.executable, "-m", "loa.cli", "audit", "verify", "--data-dir", info["data"]],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout or "ok" in verify.stdout.lower(), verify.stdout
