"""Reports: as-played ingest and log, uptime (checked against a simple reference), broadcast hours per commune in
Asia/Ho_Chi_Minh months, CSV export with Vietnamese text; on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from loa.control_plane import asplayed, devices, reports
from loa.control_plane.api import create_app
from loa.control_plane.asplayed import BroadcastStart, DeviceOffline, PlayedReport, StateReport
from loa.control_plane.errors import InvalidError, NotFoundError
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import ManualClock, Seed, bearer, fast_settings
from loa.protocol.control import Played, PlayedFrame, State

T0 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1) * 1000


@dataclass
class Env:
    cp: ControlPlane
    client: TestClient
    seed: Seed
    clock: ManualClock
    tokens: dict[str, dict[str, str]]

    def at(self, when: datetime) -> Env:
        self.clock.now = when
        return self

    def device(self, zone: str, name: str, when: datetime = T0) -> str:
        self.at(when)
        return self.seed.device(zone, name=name)

    def status(self, device: str, online: bool, when: datetime) -> None:
        with self.at(when).cp.db.write() as tx:
            devices.record_status(tx, device, online=online)

    def report(self, device: str, report: Any, when: datetime) -> None:
        with self.at(when).cp.db.write() as tx:
            asplayed.record(tx, device, report)

    def state(self, device: str, bid: int | None, src: str, when: datetime) -> None:
        self.report(device, StateReport(bid, src, ns(when)), when)

    def broadcast(self, bid: int, kind: str, title: str, when: datetime, *, cls: int = 0, lvl: int = 1) -> None:
        with self.at(when).cp.db.write() as tx:
            asplayed.broadcast_started(tx, BroadcastStart(bid=bid, kind=kind, title=title, zones=("48",), at=when,
                                                          cls=cls, lvl=lvl))

    def get(self, path: str, who: str = "root", /, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers=self.tokens[who])
        assert response.status_code == 200, response.text
        return response.json() if params.get("format") != "csv" else response


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    clock = ManualClock(T0)
    cp = ControlPlane(fast_settings(tmp_path, db_url, clock=clock))
    seed = Seed(cp)
    seed.province()
    tokens = {name: bearer(seed.user(name, role, scope)) for name, role, scope in (
        ("root", "admin", None), ("lan", "viewer", "490"), ("khe", "viewer", "491"), ("ban", "vendor", None))}
    with TestClient(create_app(control_plane=cp)) as client:
        yield Env(cp, client, seed, clock, tokens)
    cp.close()


# -- uptime arithmetic ------------------------------------------------------------------------------------------

def _reference(changes: list[tuple[int, bool]], start: int, end: int, initial: bool) -> int:
    """Seconds online in [start, end), one second at a time."""
    total = 0
    for t in range(start, end):
        state = initial
        for at, online in changes:
            if at <= t:
                state = online
        total += state
    return total


@given(st.lists(st.tuples(st.integers(0, 120), st.booleans()), max_size=12), st.integers(0, 120),
       st.integers(0, 120), st.booleans())
def test_online_time_matches_a_simple_reference(changes: list[tuple[int, bool]], start: int, end: int,
                                               initial: bool) -> None:
    changes = sorted(changes, key=lambda c: c[0])  # stable: ties keep their order
    got = reports.online_time([(T0 + timedelta(seconds=t), s) for t, s in changes],
                              start=T0 + timedelta(seconds=start), end=T0 + timedelta(seconds=end), initial=initial)
    assert got == timedelta(seconds=_reference(changes, start, end, initial))


def test_uptime_per_device_and_per_commune(env: Env) -> None:
    h = timedelta(hours=1)
    d1 = env.device("20194-01", "Loa thôn 1")
    d2 = env.device("20194-02", "Loa thôn 2")
    d3 = env.device("20227-01", "Loa Tam Thuận")
    d4 = env.device("20195", "Loa mới", T0 + 5 * h)  # enrolled half-way: observed for 5 h only
    env.status(d3, True, T0)
    env.status(d1, True, T0 + h)
    env.status(d1, False, T0 + 3 * h)
    env.status(d4, True, T0 + 5 * h)
    env.status(d1, True, T0 + 9 * h)
    env.at(T0 + 12 * h)
    window = {"since": "2025-03-01T00:00:00Z", "until": "2025-03-01T10:00:00Z"}

    by_device = {u["device"]: u for u in env.get("/api/v1/reports/uptime", **window)["items"]}
    assert (by_device[d1]["online_s"], by_device[d1]["observed_s"], by_device[d1]["fraction"]) == (10800, 36000, 0.3)
    assert by_device[d2]["fraction"] == 0
    assert by_device[d3]["fraction"] == 1
    assert (by_device[d4]["online_s"], by_device[d4]["observed_s"]) == (18000, 18000)

    by_commune = {u["commune"]: u for u in env.get("/api/v1/reports/uptime", by="commune", **window)["items"]}
    assert set(by_commune) == {"20194", "20195", "20227"}
    assert (by_commune["20194"]["devices"], by_commune["20194"]["fraction"]) == (2, 0.15)
    assert by_commune["20194"]["name"] == "Phường Hòa Hiệp Bắc"
    assert by_commune["20227"]["fraction"] == 1

    # the window is clipped to now; the default window is the last 7 days
    recent = {u["device"]: u for u in env.get("/api/v1/reports/uptime", since="2025-03-01T09:00:00Z")["items"]}
    assert (recent[d1]["online_s"], recent[d1]["observed_s"]) == (3 * 3600, 3 * 3600)
    default = env.get("/api/v1/reports/uptime", device=d1)
    assert [u["device"] for u in default["items"]] == [d1]
    assert default["since"] == "2025-02-22T12:00:00Z"

    # scope: a district viewer sees its devices and communes only, and cannot ask about others
    mine = env.get("/api/v1/reports/uptime", "lan", by="commune", **window)["items"]
    assert [u["commune"] for u in mine] == ["20194", "20195"]
    assert env.client.get("/api/v1/reports/uptime", params={"device": d3},
                          headers=env.tokens["lan"]).status_code == 403
    assert env.client.get("/api/v1/reports/uptime", headers=env.tokens["ban"]).status_code == 403  # vendor

    first = env.get("/api/v1/reports/uptime", limit=2, **window)
    rest = env.get("/api/v1/reports/uptime", limit=2, cursor=first["next_cursor"], **window)
    assert [u["device"] for u in first["items"] + rest["items"]] == sorted([d1, d2, d3, d4])
    assert rest["next_cursor"] is None


# -- the as-played log ------------------------------------------------------------------------------------------

def test_as_played_records_what_interrupted_what(env: Env) -> None:
    s = timedelta(seconds=1)
    d1 = env.device("20194-01", "Loa chợ")
    env.broadcast(1, "scheduled", "Bản tin thời sự", T0)
    env.state(d1, 1, "local", T0)
    env.state(d1, 1, "local", T0 + 5 * s)  # a repeat changes nothing
    env.broadcast(2, "alert", "Bão số 3", T0 + 60 * s, cls=2, lvl=2)
    env.state(d1, 2, "ip", T0 + 61 * s)
    with env.at(T0 + 120 * s).cp.db.write() as tx:
        assert asplayed.broadcast_ended(tx, 2, at=T0 + 120 * s, reason="cancelled")
        assert not asplayed.broadcast_ended(tx, 2, at=T0 + 121 * s)  # already ended
    env.state(d1, 1, "local", T0 + 121 * s)  # resumed
    env.state(d1, 2, "ip", T0 + 61 * s)  # late and stale: ignored
    env.state(d1, None, "fm", T0 + 180 * s)
    env.report(d1, DeviceOffline(), T0 + 200 * s)
    env.broadcast(3, "alert", "Cháy rừng", T0 + 300 * s, cls=2, lvl=2)
    for report in asplayed.from_message(Played(log=(PlayedFrame(bid=3, ssrc=1, seq=1, rtp_ts=0, at=ns(T0 + 301 * s)),
                                                    PlayedFrame(bid=3, ssrc=1, seq=2, rtp_ts=960,
                                                                at=ns(T0 + 302 * s))))):
        env.report(d1, report, T0 + 302 * s)
    env.report(d1, PlayedReport(3, ns(T0 + 303 * s), ns(T0 + 304 * s)), T0 + 304 * s)  # already open: nothing new
    env.state(d1, 1, "local", T0 + 330 * s)  # a lower rank after the alert: it ended, nothing preempted it
    for report in asplayed.from_message(State(bid=None, src="idle", since=ns(T0 + 400 * s))):
        env.report(d1, report, T0 + 400 * s)

    rows = env.get("/api/v1/reports/as-played", device=d1)["items"]
    summary = [(r["bid"], r["kind"], r["title"], r["duration_ms"], r["end_reason"], r["interrupted_by"],
                r["interrupted_by_bid"]) for r in rows]
    assert summary == [
        (1, "scheduled", "Bản tin thời sự", 61_000, "preempted", "Bão số 3", 2),
        (2, "alert", "Bão số 3", 59_000, "cancelled", None, None),
        (1, "scheduled", "Bản tin thời sự", 59_000, "interrupted", "FM", None),
        (None, "fm", "FM", 20_000, "offline", None, None),
        (3, "alert", "Cháy rừng", 29_000, "ended", None, None),
        (1, "scheduled", "Bản tin thời sự", 70_000, "ended", None, None),
    ]
    assert rows[1]["class"] == "emergency"
    assert rows[1]["level"] == "province"
    assert rows[0]["device_name"] == "Loa chợ"
    assert rows[0]["zone_name"] == "Tổ dân phố 1"

    # filters and pages
    alerts_only = env.get("/api/v1/reports/as-played", kind="alert")["items"]
    assert [r["bid"] for r in alerts_only] == [2, 3]
    window = env.get("/api/v1/reports/as-played", since="2025-03-01T00:02:30Z", until="2025-03-01T00:05:00Z")
    assert [r["bid"] for r in window["items"]] == [1, None]
    seen, cursor = [], None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = env.get("/api/v1/reports/as-played", **params)
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in rows]
    assert env.get("/api/v1/reports/as-played", "khe")["items"] == []  # another district's viewer
    assert len(env.get("/api/v1/reports/as-played", "lan")["items"]) == 6
    assert env.client.get("/api/v1/reports/as-played", params={"zone": "20194"},
                          headers=env.tokens["khe"]).status_code == 403
    bad = env.client.get("/api/v1/reports/as-played", params={"cursor": "WzEsMiwzXQ"}, headers=env.tokens["root"])
    assert bad.status_code == 422


def test_an_ongoing_row_counts_until_now_and_bad_reports_are_refused(env: Env) -> None:
    d1 = env.device("20194-01", "Loa")
    env.state(d1, None, "mic", T0)
    env.at(T0 + timedelta(minutes=3))
    (row,) = env.get("/api/v1/reports/as-played")["items"]
    assert (row["ongoing"], row["duration_ms"], row["title"]) == (True, 180_000, "Microphone")
    with env.cp.db.write() as tx, pytest.raises(InvalidError):
        asplayed.record(tx, d1, StateReport(None, "radio", ns(T0)))
    with env.cp.db.write() as tx, pytest.raises(NotFoundError):
        asplayed.record(tx, "0" * 16, StateReport(None, "fm", ns(T0)))
    # a device whose clock is not synchronised yet: taken as received now
    env.report(d1, StateReport(7, "ip", ns(datetime(2001, 1, 1, tzinfo=UTC))), T0 + timedelta(minutes=3))
    rows = env.get("/api/v1/reports/as-played")["items"]
    assert rows[-1]["started_at"] == "2025-03-01T00:03:00Z"
    assert rows[-1]["title"] == "broadcast 7"


# -- broadcast hours --------------------------------------------------------------------------------------------

def _play(env: Env, device: str, bid: int, start: datetime, end: datetime) -> None:
    env.state(device, bid, "local", start)
    env.state(device, None, "idle", end)


def test_broadcast_hours_per_commune_per_month_in_vietnam_time(env: Env) -> None:
    d1 = env.device("20194-01", "Loa 1", datetime(2025, 1, 1, tzinfo=UTC))
    d2 = env.device("20194-02", "Loa 2", datetime(2025, 1, 1, tzinfo=UTC))
    d3 = env.device("20227-01", "Loa 3", datetime(2025, 1, 1, tzinfo=UTC))
    env.broadcast(1, "scheduled", "Bản tin", datetime(2025, 1, 1, tzinfo=UTC))
    # 23:30-00:30 in Vietnam across 31 January / 1 February: all of it on 31 January in UTC
    _play(env, d1, 1, datetime(2025, 1, 31, 16, 30, tzinfo=UTC), datetime(2025, 1, 31, 17, 30, tzinfo=UTC))
    # 00:30-01:30 on 1 March in Vietnam, still February in UTC
    _play(env, d2, 1, datetime(2025, 2, 28, 17, 30, tzinfo=UTC), datetime(2025, 2, 28, 18, 30, tzinfo=UTC))
    _play(env, d3, 1, datetime(2025, 2, 10, 1, 0, tzinfo=UTC), datetime(2025, 2, 10, 3, 0, tzinfo=UTC))
    _play(env, d1, 1, datetime(2025, 2, 11, 1, 0, tzinfo=UTC), datetime(2025, 2, 11, 1, 15, tzinfo=UTC))
    env.at(datetime(2025, 4, 2, tzinfo=UTC))

    result = env.get("/api/v1/reports/broadcast-hours", from_month="2025-01", to_month="2025-03")
    assert result["months"] == ["2025-01", "2025-02", "2025-03"]
    got = {(h["month"], h["commune"]): (h["hours"], h["plays"], h["devices"]) for h in result["items"]}
    assert got == {
        ("2025-01", "20194"): (0.5, 1, 1), ("2025-01", "20195"): (0, 0, 0), ("2025-01", "20227"): (0, 0, 0),
        ("2025-02", "20194"): (0.75, 2, 1), ("2025-02", "20195"): (0, 0, 0), ("2025-02", "20227"): (2, 1, 1),
        ("2025-03", "20194"): (1, 1, 1), ("2025-03", "20195"): (0, 0, 0), ("2025-03", "20227"): (0, 0, 0),
    }
    assert [(h["month"], h["commune"]) for h in result["items"]] == sorted(got)

    pages, cursor = [], None
    while True:
        params = {"from_month": "2025-01", "to_month": "2025-03", "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = env.get("/api/v1/reports/broadcast-hours", **params)
        pages.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [4, 4, 1]
    mine = env.get("/api/v1/reports/broadcast-hours", "khe", from_month="2025-02")["items"]
    assert [(h["commune"], h["hours"]) for h in mine] == [("20227", 2)]
    assert env.get("/api/v1/reports/broadcast-hours")["months"] == ["2025-04"]  # this month, in Vietnam
    for params in ({"from_month": "2025-03", "to_month": "2025-01"}, {"from_month": "2020-01", "to_month": "2025-01"},
                   {"from_month": "2025-13"}):
        assert env.client.get("/api/v1/reports/broadcast-hours", params=params,
                              headers=env.tokens["root"]).status_code == 422


def test_month_bounds_are_vietnamese_midnights() -> None:
    first, following = reports.month_bounds("2024-12")
    assert first == datetime(2024, 11, 30, 17, 0, tzinfo=UTC)
    assert following == datetime(2024, 12, 31, 17, 0, tzinfo=UTC)
    assert reports.month_range("2024-11", "2025-02") == ["2024-11", "2024-12", "2025-01", "2025-02"]


# -- CSV --------------------------------------------------------------------------------------------------------

def _csv(response: Any) -> list[dict[str, str]]:
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")  # a BOM: Excel reads UTF-8
    text = response.content.decode("utf-8-sig")
    assert "\r\n" in text
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_round_trip_keeps_vietnamese_text(env: Env) -> None:
    d1 = env.device("20194-01", "Loa chợ Hòa Hiệp — cột số 7")
    env.broadcast(1, "scheduled", "Bản tin thời sự: “Đảm bảo an toàn”, ngày 1/3", T0)
    env.broadcast(2, "live", "=HYPERLINK(\"http://example.invalid\")", T0)
    env.state(d1, 1, "local", T0)
    env.state(d1, 2, "ip", T0 + timedelta(hours=1))
    env.state(d1, None, "idle", T0 + timedelta(hours=2))
    env.status(d1, True, T0)
    env.at(T0 + timedelta(hours=3))

    played = _csv(env.get("/api/v1/reports/as-played", format="csv"))
    assert [(r["device_name"], r["zone_name"], r["title"]) for r in played] == [
        ("Loa chợ Hòa Hiệp — cột số 7", "Tổ dân phố 1", "Bản tin thời sự: “Đảm bảo an toàn”, ngày 1/3"),
        ("Loa chợ Hòa Hiệp — cột số 7", "Tổ dân phố 1", "'=HYPERLINK(\"http://example.invalid\")"),
    ]
    assert played[0]["started (Asia/Ho_Chi_Minh)"] == "2025-03-01 07:00:00"
    assert played[0]["duration_s"] == "3600.000"
    assert played[0]["end_reason"] == "ended"

    hours = _csv(env.get("/api/v1/reports/broadcast-hours", from_month="2025-03", format="csv"))
    assert [(r["commune"], r["name"], r["hours"]) for r in hours] == [
        ("20194", "Phường Hòa Hiệp Bắc", "2.000"), ("20195", "Phường Hòa Hiệp Nam", "0.000"),
        ("20227", "Phường Tam Thuận", "0.000")]

    uptime = _csv(env.get("/api/v1/reports/uptime", by="commune", since="2025-03-01T00:00:00Z", format="csv"))
    assert uptime[0]["name"] == "Phường Hòa Hiệp Bắc"
    assert uptime[0]["uptime_percent"] == "100.00"
    assert uptime[1]["uptime_percent"] == ""  # no devices: nothing observed
    by_device = _csv(env.get("/api/v1/reports/uptime", format="csv"))
    assert by_device[0]["name"] == "Loa chợ Hòa Hiệp — cột số 7"


def test_csv_streams_more_than_one_batch(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from loa.control_plane.api import routes_reports

    monkeypatch.setattr(routes_reports, "CSV_BATCH", 2)
    d1 = env.device("20194-01", "Loa")
    for i in range(5):
        env.state(d1, None, ("fm", "mic")[i % 2], T0 + timedelta(minutes=i))
    rows = _csv(env.get("/api/v1/reports/as-played", format="csv"))
    assert [r["source"] for r in rows] == ["fm", "mic", "fm", "mic", "fm"]


# -- batches -----------------------------------------------------------------------------------------------------

_SECOND = timedelta(seconds=1)
_BROADCASTS = [(1, "scheduled", 0, 1, None), (2, "alert", 2, 2, 50), (3, "live", 1, 3, None), (4, "alert", 2, 1, 20)]


def _report_strategy() -> st.SearchStrategy[tuple[int, Any]]:
    at = st.integers(0, 100)
    state = st.one_of(
        st.builds(lambda bid, src, t: StateReport(bid, src, ns(T0 + t * _SECOND)),
                  st.integers(1, 5), st.sampled_from(["ip", "local", "idle"]), at),
        st.builds(lambda src, t: StateReport(None, src, ns(T0 + t * _SECOND)),
                  st.sampled_from(["fm", "line", "mic", "idle"]), at),
        st.builds(lambda bid, t: PlayedReport(bid, ns(T0 + t * _SECOND), ns(T0 + (t + 1) * _SECOND)),
                  st.integers(1, 5), at),
        st.builds(lambda t: DeviceOffline(None if t is None else T0 + t * _SECOND), st.none() | at),
    )
    return st.tuples(st.integers(0, 2), state)


def _played(cp: ControlPlane, idents: list[str]) -> list[tuple[Any, ...]]:
    from sqlalchemy import select

    from loa.control_plane.db.schema import as_played

    with cp.db.read() as conn:
        rows = conn.execute(select(as_played).where(as_played.c.device_id.in_(idents))
                            .order_by(as_played.c.id)).all()
    return [(idents.index(r.device_id), *r[2:]) for r in rows]  # the columns after id and device_id


@pytest.fixture(scope="module")
def batch_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One SQLite control plane for every example (each example brings devices of its own), with broadcasts of
    several ranks, some of them ended."""
    clock = ManualClock(T0)
    cp = ControlPlane(fast_settings(tmp_path_factory.mktemp("batch"), clock=clock))
    seed = Seed(cp)
    seed.province()
    env = Env(cp, None, seed, clock, {})  # type: ignore[arg-type]
    for bid, kind, cls, lvl, ended in _BROADCASTS:
        env.broadcast(bid, kind, f"broadcast {kind} {bid}", T0, cls=cls, lvl=lvl)
        if ended is not None:
            with env.at(T0 + ended * _SECOND).cp.db.write() as tx:
                asplayed.broadcast_ended(tx, bid, at=T0 + ended * _SECOND)
    yield env
    cp.close()


@given(reports=st.lists(_report_strategy(), max_size=25))
def test_a_batch_writes_what_its_reports_one_by_one_would(batch_env: Env, reports: list[tuple[int, Any]]) -> None:
    """record_many folds a batch in a few statements; what it writes is what record of each report in turn writes,
    whatever the devices, sources, order, repeats, stale reports and broadcasts ended or not."""
    env = batch_env
    one = [env.device("20194-01", f"a{i}") for i in range(3)]
    batch = [env.device("20194-01", f"b{i}") for i in range(3)]
    env.at(T0 + 101 * _SECOND)
    for index, report in reports:
        with env.cp.db.write() as tx:
            asplayed.record(tx, one[index], report)
    with env.cp.db.write() as tx:
        asplayed.record_many(tx, [(batch[index], report) for index, report in reports])
    assert _played(env.cp, batch) == _played(env.cp, one)
