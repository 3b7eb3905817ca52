"""The schedule: recurrence (RRULE, time zones, DST, refusals), conflicts shown before saving, occurrences, and
the schedule API (approval gate, scope, force, check, edit, delete)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from loa.control_plane import recurrence
from loa.control_plane.db.schema import audit_head
from loa.control_plane.errors import InvalidError
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, bearer, library_item

VN = ZoneInfo("Asia/Ho_Chi_Minh")
NY = ZoneInfo("America/New_York")
FUTURE = datetime.now(UTC).year + 1  # a year whose June is always ahead of the test's clock


# -- recurrence --------------------------------------------------------------------------------------------------

def test_daily_at_six_in_viet_nam() -> None:
    timing = recurrence.make(datetime(2025, 6, 1, 6, 0), rrule_text="RRULE:freq=daily;count=3")
    assert timing.tz == "Asia/Ho_Chi_Minh"
    assert timing.rrule == "FREQ=DAILY;COUNT=3"
    starts = timing.between(datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    assert [s.astimezone(VN).strftime("%m-%d %H:%M") for s in starts] == ["06-01 06:00", "06-02 06:00", "06-03 06:00"]
    assert starts[0] == datetime(2025, 5, 31, 23, 0, tzinfo=UTC)
    aware = recurrence.make(datetime(2025, 6, 1, 1, 0, tzinfo=UTC))  # an instant is converted to the zone's wall time
    assert aware.start_local == datetime(2025, 6, 1, 8, 0)
    assert aware.between(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 2, tzinfo=UTC)) == [
        datetime(2025, 6, 1, 1, 0, tzinfo=UTC)]


def test_wall_clock_time_across_daylight_saving() -> None:
    daily = recurrence.make(datetime(2025, 3, 8, 6, 0), tz="America/New_York", rrule_text="FREQ=DAILY")
    starts = daily.between(datetime(2025, 3, 8, tzinfo=UTC), datetime(2025, 3, 11, tzinfo=UTC))
    assert [s.astimezone(NY).strftime("%d %H:%M %z") for s in starts] == [
        "08 06:00 -0500", "09 06:00 -0400", "10 06:00 -0400"]
    skipped = recurrence.make(datetime(2025, 3, 8, 2, 30), tz="America/New_York", rrule_text="FREQ=DAILY")
    starts = skipped.between(datetime(2025, 3, 8, tzinfo=UTC), datetime(2025, 3, 11, tzinfo=UTC))
    assert [s.astimezone(NY).strftime("%d %H:%M") for s in starts] == ["08 02:30", "09 03:30", "10 02:30"]
    hourly = recurrence.make(datetime(2025, 11, 1, 0, 30), tz="America/New_York", rrule_text="FREQ=HOURLY")
    starts = hourly.between(datetime(2025, 11, 2, 4, 0, tzinfo=UTC), datetime(2025, 11, 2, 8, 0, tzinfo=UTC))
    assert starts == sorted(set(starts))
    assert len(starts) >= 3


@pytest.mark.parametrize(("rule", "why"), [
    ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "never occurs"),
    ("FREQ=HOURLY;BYMONTH=4;BYMONTHDAY=31", "never occurs"),
    ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6", "never occurs"),
    ("FREQ=MINUTELY", "at most hourly"),
    ("FREQ=SECONDLY;INTERVAL=5", "at most hourly"),
    ("FREQ=DAILY;UNTIL=20250101T000000Z", "no occurrence from the start"),
    ("FREQ=DAILY;UNTIL=20250701", "UTC"),
    ("FREQ=DAILY;COUNT=0", "no occurrence"),
    ("DTSTART=20250101T000000;FREQ=DAILY", "start"),
    ("FREQ=DAILY\nEXDATE:20250602T060000", "one RFC 5545 RRULE"),
    ("BYHOUR=6", "rrule: "),
    ("FREQ=FORTNIGHTLY", "FORTNIGHTLY"),
    ("FREQ=YEARLY;BYMONTH=13", "rrule: "),
])
def test_rules_that_are_refused(rule: str, why: str) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidError, match=why):
        recurrence.make(datetime(2025, 6, 1, 6, 0), rrule_text=rule)
    assert time.monotonic() - started < 2


def test_times_and_zones_that_are_refused() -> None:
    for tz in ("Mars/Olympus", "", "../../etc/passwd", "UTC\x00"):
        with pytest.raises(InvalidError, match="time zone"):
            recurrence.make(datetime(2025, 6, 1, 6, 0), tz=tz)
    with pytest.raises(InvalidError, match="years"):
        recurrence.make(datetime(9999, 12, 31, 23, 59))
    with pytest.raises(InvalidError, match="offset"):
        recurrence.make(datetime(2025, 6, 1), valid_from=datetime(2025, 6, 1))
    with pytest.raises(InvalidError, match="after"):
        recurrence.make(datetime(2025, 6, 1), valid_from=datetime(2025, 6, 2, tzinfo=UTC),
                        valid_until=datetime(2025, 6, 1, tzinfo=UTC))


def test_the_validity_window_bounds_occurrences() -> None:
    timing = recurrence.make(datetime(2025, 6, 1, 6, 0), rrule_text="FREQ=DAILY",
                             valid_from=datetime(2025, 6, 3, tzinfo=VN),
                             valid_until=datetime(2025, 6, 5, 6, 0, tzinfo=VN))
    starts = timing.between(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC))
    assert [s.astimezone(VN).day for s in starts] == [3, 4]


RULES = st.sampled_from(["FREQ=HOURLY", "FREQ=HOURLY;INTERVAL=5;BYMINUTE=15", "FREQ=DAILY;INTERVAL=3",
                         "FREQ=DAILY;BYHOUR=6,18", "FREQ=WEEKLY;BYDAY=MO,TH", "FREQ=WEEKLY;INTERVAL=2;BYDAY=SU",
                         "FREQ=MONTHLY;BYMONTHDAY=1,15", "FREQ=MONTHLY;BYDAY=-1FR", "FREQ=MONTHLY;INTERVAL=7",
                         "FREQ=YEARLY;BYMONTH=9;BYMONTHDAY=2", "FREQ=YEARLY;INTERVAL=2",
                         "FREQ=DAILY;UNTIL=20300101T000000Z"])


@given(rule=RULES, tz=st.sampled_from(["Asia/Ho_Chi_Minh", "America/New_York", "Europe/Paris"]),
       start=st.datetimes(datetime(2001, 1, 1), datetime(2028, 12, 31)),
       offset=st.timedeltas(timedelta(0), timedelta(days=3 * 365)))
@settings(max_examples=60, deadline=None, database=None)
def test_expanding_near_a_late_time_gives_what_the_whole_rule_gives(rule: str, tz: str, start: datetime,
                                                                    offset: timedelta) -> None:
    start = start.replace(microsecond=0)
    timing = recurrence.make(start, tz=tz, rrule_text=rule)
    since = start.replace(tzinfo=UTC) + offset
    until = since + timedelta(days=40)
    whole = rrulestr(timing.rrule or "", dtstart=start.replace(tzinfo=ZoneInfo(tz)))
    expected = sorted({o.astimezone(UTC) for o in whole.between(since - timedelta(days=2), until + timedelta(days=2),
                                                                inc=True)
                       if since <= o.astimezone(UTC) < until})
    assert timing.between(since, until) == expected


# -- the API -----------------------------------------------------------------------------------------------------

@pytest.fixture
def world(cp: ControlPlane, seed: Seed) -> dict[str, Any]:
    seed.province()
    return {
        "scheduler": bearer(seed.user("lan", "scheduler", "490")),
        "commune": bearer(seed.user("minh", "scheduler", "20194")),
        "other": bearer(seed.user("hoa", "scheduler", "491")),
        "viewer": bearer(seed.user("xem", "viewer", "20194-01")),
        "audio": library_item(cp, zone="490", kind="audio", duration_s=1.0),
        "long": library_item(cp, zone="48", kind="audio", duration_s=2.0),
        "board": library_item(cp, zone="20194"),
        "draft": library_item(cp, zone="490", state="draft"),
    }


def _entry(item: int, zones: list[str], start: str, **extra: Any) -> dict[str, Any]:
    return {"title": "Bản tin", "item": item, "zones": zones, "start": start, **extra}


def _audit_head(cp: ControlPlane) -> int:
    with cp.db.read() as conn:
        return int(conn.execute(select(audit_head.c.seq)).scalar_one())


def test_conflicts_are_shown_before_saving(cp: ControlPlane, client: TestClient, world: dict[str, Any]) -> None:
    lan, minh = world["scheduler"], world["commune"]
    first = client.post("/api/v1/schedule", headers=lan,
                        json=_entry(world["audio"], ["490"], f"{FUTURE}-06-02T06:00:00", rrule="FREQ=DAILY"))
    assert first.status_code == 201, first.text
    first_id = first.json()["entry"]["id"]
    assert first.json()["entry"]["next_occurrence"] == f"{FUTURE}-06-01T23:00:00Z"

    # a hamlet of the district, at the same time: its 06:00:00-06:00:02 overlaps the district's 06:00:00-06:00:01
    clash = _entry(world["long"], ["20194-01"], f"{FUTURE}-06-05T06:00:00", rrule="FREQ=DAILY;COUNT=3")
    head = _audit_head(cp)
    check = client.post("/api/v1/schedule/check", headers=minh, json=clash)
    assert check.status_code == 200, check.text
    result = check.json()
    assert not result["ok"]
    [conflict] = result["conflicts"]
    assert (conflict["entry"], conflict["zones"], conflict["count"]) == (first_id, [["20194-01", "490"]], 3)
    assert conflict["occurrences"][0] == {"start": f"{FUTURE}-06-04T23:00:00Z", "end": f"{FUTURE}-06-04T23:00:02Z",
                                          "other_start": f"{FUTURE}-06-04T23:00:00Z",
                                          "other_end": f"{FUTURE}-06-04T23:00:01Z"}
    assert result["next_occurrences"][:1] == [f"{FUTURE}-06-04T23:00:00Z"]
    assert _audit_head(cp) == head, "a check changes nothing"

    refused = client.post("/api/v1/schedule", headers=minh, json=clash)
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["type"] == "/problems/schedule-conflict"
    assert f"entry {first_id} 'Bản tin' (normal) on 20194-01/490 at {FUTURE}-06-05 06:00:00-06:00:02" in problem[
        "detail"]
    assert "and 2 more times" in problem["detail"]
    assert problem["conflicts"][0]["entry"] == first_id
    assert _audit_head(cp) == head

    forced = client.post("/api/v1/schedule", headers=minh, json={**clash, "force": True})
    assert forced.status_code == 201
    assert [c["entry"] for c in forced.json()["conflicts"]] == [first_id]

    forced_id = forced.json()["entry"]["id"]
    other_district = bearer(Seed(cp).user("ha", "scheduler", "491"))
    for who, body, expected in (
        (other_district, _entry(world["long"], ["20227"], f"{FUTURE}-06-02T06:00:00", rrule="FREQ=DAILY"), []),
        (lan, _entry(world["audio"], ["490"], f"{FUTURE}-06-02T06:00:01", rrule="FREQ=DAILY"), [forced_id]),
        (lan, _entry(world["board"], ["20194"], f"{FUTURE}-06-02T06:00:00", rrule="FREQ=DAILY"), []),  # boards
    ):
        checked = client.post("/api/v1/schedule/check", headers=who, json=body)
        assert checked.status_code == 200, checked.text
        assert [c["entry"] for c in checked.json()["conflicts"]] == expected, body
    replacing = client.post("/api/v1/schedule/check", headers=lan, json={**clash, "replaces": forced_id})
    assert [c["entry"] for c in replacing.json()["conflicts"]] == [first_id]


def test_the_gate_and_the_scope(cp: ControlPlane, client: TestClient, world: dict[str, Any]) -> None:
    lan = world["scheduler"]
    draft = client.post("/api/v1/schedule", headers=lan, json=_entry(world["draft"], ["490"], f"{FUTURE}-06-02T06:00"))
    assert draft.status_code == 409
    assert draft.json()["type"] == "/problems/not-approved"
    outside = client.post("/api/v1/schedule", headers=world["other"],
                          json=_entry(world["audio"], ["20227"], f"{FUTURE}-06-02T06:00"))
    assert outside.status_code == 403  # the district's item is not the other district's to use
    beyond = client.post("/api/v1/schedule", headers=lan, json=_entry(world["audio"], ["491"], f"{FUTURE}-06-02T06:00"))
    assert beyond.status_code == 403
    commune_item = client.post("/api/v1/schedule", headers=lan,
                               json=_entry(world["board"], ["490"], f"{FUTURE}-06-02T06:00"))
    assert commune_item.status_code == 422  # a commune's item plays only in that commune
    raised = client.post("/api/v1/schedule", headers=lan,
                         json=_entry(world["audio"], ["490"], f"{FUTURE}-06-02T06:00", **{"class": "emergency"}))
    assert raised.status_code == 422
    assert "never raise" in raised.json()["detail"]
    for bad in ({"rrule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31"}, {"tz": "Asia/Saigon2"}, {"duration_ms": 5000},
                {"start": "9999-12-31T23:59:59+14:00"}):
        response = client.post("/api/v1/schedule", headers=lan,
                               json={**_entry(world["audio"], ["490"], f"{FUTURE}-06-02T06:00"), **bad})
        assert response.status_code == 422, (bad, response.text)
    overlapping = client.post("/api/v1/schedule", headers=lan, json=_entry(
        world["board"], ["20194"], f"{FUTURE}-06-02T06:00", rrule="FREQ=HOURLY", duration_ms=2 * 3600 * 1000))
    assert overlapping.status_code == 422
    assert "own occurrences overlap" in overlapping.json()["detail"]


def test_occurrences_edit_and_delete(cp: ControlPlane, client: TestClient, world: dict[str, Any]) -> None:
    lan, viewer = world["scheduler"], world["viewer"]
    made = client.post("/api/v1/schedule", headers=lan, json=_entry(
        world["audio"], ["20194-01", "20194-02"], f"{FUTURE}-06-02T06:00", rrule="FREQ=WEEKLY;BYDAY=MO,WE,FR",
        policy="drop"))
    assert made.status_code == 201, made.text
    entry = made.json()["entry"]
    assert (entry["zones"], entry["policy"], entry["class"], entry["level"]) == (
        ["20194-01", "20194-02"], "drop", "normal", "commune")
    window = {"since": f"{FUTURE}-06-01T00:00:00+07:00", "until": f"{FUTURE}-06-15T00:00:00+07:00"}
    listed = client.get("/api/v1/schedule/occurrences", headers=viewer, params=window)
    assert listed.status_code == 200, listed.text
    days = [datetime.fromisoformat(o["start"]).astimezone(VN).strftime("%a %H:%M") for o in listed.json()["items"]]
    assert set(days) <= {"Mon 06:00", "Wed 06:00", "Fri 06:00"}
    assert len(days) == 6
    assert listed.json()["items"][0]["end"] > listed.json()["items"][0]["start"]
    assert client.get("/api/v1/schedule/occurrences", headers=world["other"], params=window).json()["items"] == []
    too_long = client.get("/api/v1/schedule/occurrences", headers=viewer,
                          params={**window, "until": f"{FUTURE}-08-01T00:00:00+07:00"})
    assert too_long.status_code == 422
    assert [e["id"] for e in client.get("/api/v1/schedule", headers=viewer).json()["items"]] == [entry["id"]]
    assert client.get(f"/api/v1/schedule/{entry['id']}", headers=world["other"]).status_code == 403

    patched = client.patch(f"/api/v1/schedule/{entry['id']}", headers=lan,
                           json={"title": "Bản tin tối", "start": f"{FUTURE}-06-02T19:00", "rrule": None})
    assert patched.status_code == 200, patched.text
    after = patched.json()["entry"]
    assert (after["title"], after["rrule"], after["start"], after["version"]) == (
        "Bản tin tối", None, f"{FUTURE}-06-02T19:00:00", 2)
    assert client.patch(f"/api/v1/schedule/{entry['id']}", headers=world["commune"],
                        json={"enabled": False}).status_code == 200  # both targets lie in the commune
    assert client.get("/api/v1/schedule", headers=viewer, params={"enabled": "true"}).json()["items"] == []
    firings = client.get(f"/api/v1/schedule/{entry['id']}/firings", headers=viewer)
    assert firings.json() == {"items": [], "next_cursor": None}
    assert client.delete(f"/api/v1/schedule/{entry['id']}", headers=world["other"]).status_code == 403
    assert client.delete(f"/api/v1/schedule/{entry['id']}", headers=lan).status_code == 204
    assert client.get(f"/api/v1/schedule/{entry['id']}", headers=lan).status_code == 404
    item_used = client.delete(f"/api/v1/library/{world['audio']}", headers=bearer(Seed(cp).user("ed", "editor", "490")))
    assert item_used.status_code == 204  # the entry is gone, so the item may go
