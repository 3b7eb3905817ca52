"""Zones: the tree, its queries and changes, and CSV import (good files and every kind of bad line)."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from sqlalchemy import select

from loa.control_plane import audit, zones
from loa.control_plane.auth import Actor
from loa.control_plane.db import Database
from loa.control_plane.db.schema import zones as zones_table
from loa.control_plane.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from loa.control_plane.zone_import import ImportReport, import_csv, parse_csv

ACTOR = Actor("tester", "192.0.2.1")
CSV = """code,name,parent,level
48,Thành phố Đà Nẵng,,province
490,Quận Liên Chiểu,48,district
20194,Phường Hòa Hiệp Bắc,490,commune
20194-01,Tổ dân phố 1,20194,hamlet
20194-02,Tổ dân phố 2,20194,hamlet
491,Quận Thanh Khê,48,district
"""


@pytest.fixture
def db(db_url: str) -> Database:
    database = Database.open(db_url)
    yield database  # type: ignore[misc]
    database.close()


def _import(db: Database, text: str | bytes, within: str | None = None) -> ImportReport:
    data = text.encode() if isinstance(text, str) else text
    with db.write() as tx:
        return import_csv(tx, ACTOR, data, within=within)


def _errors(db: Database, text: str | bytes, within: str | None = None) -> list[tuple[int, str]]:
    with pytest.raises(InvalidError) as info:
        _import(db, text, within)
    return [(e["line"], e["message"]) for e in info.value.errors]


def _codes(db: Database) -> set[str]:
    with db.read() as conn:
        return set(conn.execute(select(zones_table.c.code)).scalars())


def test_import_builds_the_tree(db: Database) -> None:
    report = _import(db, CSV)
    assert (report.rows, report.created, report.updated, report.unchanged) == (6, 6, 0, 0)
    with db.read() as conn:
        assert zones.ancestors(conn, "20194-02") == ("48", "490", "20194", "20194-02")
        assert {z.code for _, z in zones.subtree(conn, "490")} == {"490", "20194", "20194-01", "20194-02"}
        assert [(d, z.code) for d, z in zones.subtree(conn, "48")][:3] == [(0, "48"), (1, "490"), (1, "491")]
        assert zones.get(conn, "20194").name == "Phường Hòa Hiệp Bắc"
        assert zones.get(conn, "20194").level == "commune"
        assert [z.code for z in zones.list_zones(conn, parent=zones.ROOT)] == ["48"]
        assert [z.code for z in zones.list_zones(conn, parent="20194")] == ["20194-01", "20194-02"]
        assert [z.code for z in zones.list_zones(conn, q="Hòa Hiệp")] == ["20194"]
        assert [z.code for z in zones.list_zones(conn, within="490", after="20194")] == ["20194-01", "20194-02",
                                                                                          "490"]
        entries = audit.entries(conn, action="zone.import")
    assert len(entries) == 1
    assert entries[0].details["created"] == 6
    assert entries[0].actor == "tester"
    assert entries[0].source == "192.0.2.1"


def test_import_tolerates_bom_any_order_no_header_and_decomposed_diacritics(db: Database) -> None:
    decomposed = unicodedata.normalize("NFD", "Xã Hòa Bắc")
    assert decomposed != "Xã Hòa Bắc"
    text = f"c1,{decomposed},p,commune\r\np,Huyện Hòa Vang,,district\r\n\r\n"
    report = _import(db, b"\xef\xbb\xbf" + text.encode())
    assert report.created == 2
    with db.read() as conn:
        assert zones.get(conn, "c1").name == "Xã Hòa Bắc"  # stored in NFC


def test_vietnamese_header_and_reordered_columns(db: Database) -> None:
    report = _import(db, "Tên,Mã,Mã cha,Cấp\nTỉnh Quảng Nam,49,,tỉnh\nThị xã Điện Bàn,503,49,huyện\n")
    assert report.created == 2
    with db.read() as conn:
        assert zones.get(conn, "503").parent == "49"


def test_reimport_updates_and_moves(db: Database) -> None:
    _import(db, CSV)
    changed = CSV.replace("Tổ dân phố 2,20194,hamlet", "Tổ dân phố Hai,20194,hamlet").replace(
        "20194,Phường Hòa Hiệp Bắc,490,commune", "20194,Phường Hòa Hiệp Bắc,491,commune")
    report = _import(db, changed)
    assert (report.created, report.updated, report.unchanged) == (0, 2, 4)
    with db.read() as conn:
        assert zones.ancestors(conn, "20194-02") == ("48", "491", "20194", "20194-02")


def test_every_bad_line_is_reported_and_nothing_is_written(db: Database) -> None:
    bad = (
        "code,name,parent,level\n"          # 1
        "48,Đà Nẵng,,province\n"            # 2
        "490,,48,district\n"                # 3: empty name
        "bad code!,Tên,48\n"                # 4: bad code
        "491,Thanh Khê,nowhere\n"           # 5: unknown parent
        "48,Again,,province\n"              # 6: duplicate
        "a,A,b\n"                           # 7: cycle a -> b -> a
        "b,B,a\n"                           # 8
        "492,Cẩm Lệ,48,x\x01y\n"            # 9: control character in level
        "493,Sơn Trà,48\n"                  # 10: fine
    )
    errors = _errors(db, bad)
    lines = [line for line, _ in errors]
    assert lines == [3, 4, 5, 6, 7, 8, 9]
    messages = dict(errors)
    assert "name" in messages[3]
    assert "zone code" in messages[4]
    assert "unknown parent" in messages[5]
    assert "line 2" in messages[6]
    assert "cycle" in messages[7]
    assert "level" in messages[9]
    assert _codes(db) == set()


def test_wrong_column_counts_and_encoding(db: Database) -> None:
    assert _errors(db, "48,Đà Nẵng\n49,Quảng Nam,,x,extra\n") == [
        (1, "expected 3 or 4 columns (code, name, parent[, level]), found 2"),
        (2, "expected 3 or 4 columns (code, name, parent[, level]), found 5"),
    ]
    latin1 = "48,Đà Nẵng,,\n49,Hòa,48\n".encode()[:8] + "49,H\xf2a,48\n".encode("latin-1")
    errors = _errors(db, latin1)
    assert len(errors) == 1
    assert errors[0][0] == 1 or errors[0][0] == 2
    assert "UTF-8" in errors[0][1]
    assert _errors(db, "") == [(1, "no zones in the file")]
    assert _errors(db, 'a,"unterminated\n')[0][1].startswith("malformed CSV")


def test_depth_is_limited_to_eight(db: Database) -> None:
    rows = "".join(f"z{i},Z{i},{'z' + str(i - 1) if i else ''}\n" for i in range(9))
    errors = _errors(db, rows)
    assert errors == [(9, "zone 'z8' would be 9 levels deep; at most 8 (a device's zone path holds at most 8 zones)")]
    _import(db, "".join(f"z{i},Z{i},{'z' + str(i - 1) if i else ''}\n" for i in range(8)))
    with db.read() as conn:
        assert len(zones.ancestors(conn, "z7")) == 8
    with pytest.raises(InvalidError, match="levels deep"), db.write() as tx:
        zones.create(tx, ACTOR, code="z8", name="Z8", parent="z7")


def test_import_within_a_scope(db: Database) -> None:
    _import(db, CSV)
    ok = _import(db, "code,name,parent\n490,Quận Liên Chiểu,48,district\n20194-03,Tổ 3,20194\n", within="490")
    assert ok.created == 1
    with pytest.raises(ForbiddenError) as info:
        _import(db, "code,name,parent\n20194-04,Tổ 4,20194\n491-01,Ngoài,491\n490,Renamed,48\n", within="490")
    errors = [(e["line"], e["message"]) for e in info.value.extra["errors"]]
    assert [line for line, _ in errors] == [3, 4]
    assert "outside your scope" in errors[0][1]
    assert "your scope zone" in errors[1][1]


def test_create_update_move_delete(db: Database) -> None:
    _import(db, CSV)
    with db.write() as tx:
        created = zones.create(tx, ACTOR, code="20194-03", name="  Tổ dân phố 3 ", parent="20194", level="hamlet")
    assert created.name == "Tổ dân phố 3"
    with pytest.raises(ConflictError), db.write() as tx:
        zones.create(tx, ACTOR, code="20194-03", name="again", parent="20194")
    with pytest.raises(NotFoundError), db.write() as tx:
        zones.create(tx, ACTOR, code="x", name="X", parent="missing")
    with pytest.raises(InvalidError, match="inside it"), db.write() as tx:
        zones.update(tx, ACTOR, "490", parent="20194-01")
    with db.write() as tx:
        moved = zones.update(tx, ACTOR, "20194", parent="491", name="Phường Mới")
    assert (moved.parent, moved.name) == ("491", "Phường Mới")
    with db.write() as tx:
        assert zones.update(tx, ACTOR, "20194", name="Phường Mới") == moved  # no change, no audit entry
        rooted = zones.update(tx, ACTOR, "20194-03", parent=zones.ROOT)
    assert rooted.parent is None
    with pytest.raises(ConflictError, match="2 child zones"), db.write() as tx:
        zones.delete(tx, ACTOR, "20194")
    with db.write() as tx:
        zones.delete(tx, ACTOR, "20194-03")
    assert "20194-03" not in _codes(db)
    with db.read() as conn:
        actions = [e.action for e in audit.entries(conn)]
        assert actions[:3] == ["zone.delete", "zone.update", "zone.update"]
        assert audit.verify(conn).ok


@pytest.mark.parametrize("code", ["", " a", "a b", "a/b", "-a", "x" * 65, "Đ1"])
def test_bad_codes(code: str) -> None:
    with pytest.raises(InvalidError):
        zones.check_code(code)


def test_parse_only_checks_rows() -> None:
    rows = parse_csv(b"a,A,\nb,B,a,commune\n")
    assert [(r.line, r.code, r.parent, r.level) for r in rows] == [(1, "a", None, None), (2, "b", "a", "commune")]


def test_a_large_province_imports_quickly(db: Database) -> None:
    """A province-sized tree: 1 province, 10 districts, 200 communes, 4000 hamlets."""
    lines = ["p,Tỉnh,,province"]
    for d in range(10):
        lines.append(f"d{d},Huyện {d},p,district")
        for c in range(20):
            lines.append(f"d{d}c{c},Xã {c},d{d},commune")
            lines.extend(f"d{d}c{c}h{h},Thôn {h},d{d}c{c},hamlet" for h in range(20))
    report = _import(db, "\n".join(lines))
    assert report.created == 1 + 10 + 200 + 4000
    with db.read() as conn:
        assert len(zones.subtree(conn, "d3", limit=10_000)) == 1 + 20 + 400
        # every zone's path in one call (chunked queries) is the path ancestors() gives; no zone, no entry
        codes = [line.split(",")[0] for line in lines]
        many = zones.ancestors_many(conn, [*codes, "nope", codes[5]])
        assert set(many) == set(codes)
        for code in codes[::97]:
            assert many[code] == zones.ancestors(conn, code)
        assert many["d9c19h19"] == ("p", "d9", "d9c19", "d9c19h19")
        assert zones.ancestors_many(conn, []) == {}


def test_a_zone_in_use_names_every_kind_that_refers_to_it(cp: Any, seed: Any, client: Any) -> None:
    from loa.control_plane.testing import FakeDispatcher, bearer, library_item

    seed.province()
    root = bearer(seed.user("root", "admin"))
    cp.alert_dispatcher = FakeDispatcher()
    devices = [seed.device("20195"), seed.device("20195")]
    owned = library_item(cp, zone="20195")
    programme = library_item(cp, zone="490")
    entry = client.post("/api/v1/schedule", headers=root, json={
        "title": "Bản tin", "item": programme, "zones": ["20195", "20194"], "start": "2099-01-01T06:00",
        "duration_ms": 1000}).json()["entry"]["id"]
    alert_body = {"zones": ["20195"], "status": "exercise", "live_port": 5004}
    open_alert = client.post("/api/v1/alerts", headers=root, json=alert_body).json()["id"]
    closed = client.post("/api/v1/alerts", headers=root, json=alert_body).json()["id"]
    assert client.post(f"/api/v1/alerts/{closed}/cancel", headers=root).status_code == 200

    def refused() -> dict[str, Any]:
        response = client.delete("/api/v1/zones/20195", headers=root)
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return dict(response.json())

    first = refused()
    assert first["detail"] == ("zone '20195' is still referred to by 2 devices, 1 library item, 1 schedule entry, "
                               "1 alert: move or remove them first (cancel or finish the alerts)")
    assert first["used_by"] == {"devices": 2, "library items": 1, "schedule entries": 1, "alerts": 1}
    for device in devices:
        assert client.patch(f"/api/v1/devices/{device}", headers=root, json={"zone": "20194"}).status_code == 200
    assert client.delete(f"/api/v1/library/{owned}", headers=root).status_code == 204
    assert refused()["used_by"] == {"schedule entries": 1, "alerts": 1}
    assert client.post(f"/api/v1/alerts/{open_alert}/trigger", headers=root).status_code == 200
    assert refused()["used_by"] == {"schedule entries": 1, "alerts": 1}  # pending approval: still open
    assert client.post(f"/api/v1/alerts/{open_alert}/cancel", headers=root).status_code == 200
    assert refused()["detail"] == ("zone '20195' is still referred to by 1 schedule entry: "
                                   "move or remove them first")
    assert client.delete(f"/api/v1/schedule/{entry}", headers=root).status_code == 204
    assert client.delete("/api/v1/zones/20195", headers=root).status_code == 204
    with cp.db.read() as conn:
        assert audit.entries(conn, limit=1)[0].action == "zone.delete"
        assert audit.verify(conn).ok
        assert "20195" not in {z.code for z in zones.list_zones(conn)}


def test_references_count_every_kind_and_active_alerts_until_they_expire(db: Database) -> None:
    from datetime import timedelta

    from sqlalchemy import insert

    from loa.control_plane.db.schema import alert_zones, alerts

    _import(db, CSV)
    with db.write() as tx:
        now = tx.now
        for state, expires in (("active", now + timedelta(minutes=5)), ("active", now - timedelta(seconds=1)),
                               ("expired", now - timedelta(minutes=5)), ("failed", None)):
            alert_id = tx.conn.execute(insert(alerts).values(
                state=state, status="test", cls=2, lvl=3, live_port=5004, ttl_s=60, preroll_ms=0,
                created_by="t", created_at=now, updated_at=now, expires_at=expires)).inserted_primary_key[0]
            tx.conn.execute(insert(alert_zones).values(alert_id=alert_id, zone="491"))
    with db.read() as conn:
        counts = zones.references(conn, "491", now)
        assert set(counts) == {"child zones", "devices", "users", "enrolment tokens", "library items",
                               "schedule entries", "alerts"}
        assert counts["alerts"] == 2  # the unexpired active one and the failed one
        assert sum(counts.values()) == 2
        assert zones.references(conn, "490", now)["child zones"] == 1


def test_a_scoped_user_can_filter_by_a_zone_in_every_list(cp: Any, seed: Any, client: Any) -> None:
    """Two subtree filters (the caller's scope and ``zone``) in one query: each CTE is nested in its own
    subquery, so their names do not clash (this was a 500 on three routes)."""
    from loa.control_plane.testing import FakeDispatcher, bearer

    seed.province()
    cp.alert_dispatcher = FakeDispatcher()
    noc = bearer(seed.user("noc", "noc", "48"))
    inside = seed.device("20194-01")
    seed.device("20195")
    seed.device("20227-01")
    alert = client.post("/api/v1/alerts", headers=noc, json={"zones": ["20194-02"], "status": "test",
                                                              "live_port": 5004}).json()["id"]
    client.post("/api/v1/alerts", headers=noc, json={"zones": ["491"], "status": "test", "live_port": 5004})
    devices = client.get("/api/v1/devices", params={"zone": "20194"}, headers=noc)
    assert devices.status_code == 200, devices.text
    assert [d["id"] for d in devices.json()["items"]] == [inside]
    assert len(client.get("/api/v1/devices", params={"zone": "490"}, headers=noc).json()["items"]) == 2
    alerts = client.get("/api/v1/alerts", params={"zone": "20194"}, headers=noc)
    assert alerts.status_code == 200, alerts.text
    assert [a["id"] for a in alerts.json()["items"]] == [alert]
    played = client.get("/api/v1/reports/as-played", params={"zone": "20194"}, headers=noc)
    assert played.status_code == 200, played.text
