"""The audit log's hash chain: appends, verification, and detection of every kind of tampering."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, text, update

from loa.control_plane import audit
from loa.control_plane.db import Database
from loa.control_plane.db.schema import audit_head, audit_log
from loa.control_plane.testing import write_concurrently


def _fill(db: Database, n: int = 6) -> None:
    for i in range(n):
        with db.write() as tx:
            audit.record(tx, actor=f"user{i % 2}", action="zone.create", target=f"z{i}",
                         details={"name": f"Thôn {i}", "n": i, "tags": ["a", None, True]}, source="10.0.0.1")


@pytest.fixture
def db(db_url: str) -> Database:
    database = Database.open(db_url)
    _fill(database)
    yield database  # type: ignore[misc]
    database.close()


def _verify(db: Database, **kwargs: object) -> audit.AuditReport:
    with db.read() as conn:
        return audit.verify(conn, **kwargs)  # type: ignore[arg-type]


def test_intact_chain_verifies(db: Database) -> None:
    report = _verify(db)
    assert report.ok, report.summary()
    assert report.entries == 6
    assert report.head_seq == 6
    with db.read() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    assert report.head_hash == rows[-1].hash
    # The hash is the documented function of the previous hash and the canonical entry.
    prev = audit.GENESIS
    for r in rows:
        assert r.hash == audit.entry_hash(prev, seq=r.seq, at=r.at, actor=r.actor, action=r.action, target=r.target,
                                          details=__import__("json").loads(r.details), source=r.source)
        prev = r.hash
    assert "intact: 6 entries" in report.summary()


def test_canonical_form_is_stable() -> None:
    """A literal vector: anyone can recompute it (keys sorted, no spaces, UTF-8, no floats)."""
    digest = audit.entry_hash(audit.GENESIS, seq=1, at="2025-03-01T08:30:00.000000Z", actor="admin",
                              action="zone.create", target="48", details={"name": "Đà Nẵng", "b": [1, None]},
                              source=None)
    import hashlib

    body = ('{"action":"zone.create","actor":"admin","at":"2025-03-01T08:30:00.000000Z",'
            '"details":{"b":[1,null],"name":"Đà Nẵng"},"seq":1,"source":null,"target":"48"}')
    assert digest == hashlib.sha256(bytes(32) + body.encode()).hexdigest()


def test_floats_and_odd_types_are_refused(db: Database) -> None:
    with pytest.raises(TypeError, match="float"), db.write() as tx:
        audit.record(tx, actor="a", action="x", details={"v": 0.5})
    with pytest.raises(TypeError), db.write() as tx:
        audit.record(tx, actor="a", action="x", details={"v": object()})
    assert _verify(db).ok


@pytest.mark.parametrize(("column", "value"), [
    ("at", "2030-01-01T00:00:00.000000Z"),
    ("actor", "mallory"),
    ("action", "zone.delete"),
    ("target", "z999"),
    ("details", '{"name":"forged"}'),
    ("source", "203.0.113.9"),
    ("source", None),
    ("hash", "f" * 64),
])
def test_altering_any_field_is_detected(db: Database, column: str, value: object) -> None:
    with db.write() as tx:
        tx.conn.execute(update(audit_log).where(audit_log.c.seq == 3).values({column: value}))
    report = _verify(db)
    assert not report.ok
    assert report.bad_seq == 3
    assert report.entries == 2


def test_unparsable_details_are_detected(db: Database) -> None:
    with db.write() as tx:
        tx.conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(details="{not json"))
    report = _verify(db)
    assert (report.ok, report.bad_seq) == (False, 2)
    assert "not valid JSON" in (report.problem or "")


def test_deleting_an_entry_is_detected(db: Database) -> None:
    with db.write() as tx:
        tx.conn.execute(delete(audit_log).where(audit_log.c.seq == 4))
    report = _verify(db)
    assert (report.ok, report.bad_seq) == (False, 4)
    assert "missing" in (report.problem or "")


def test_deleting_the_tail_is_detected_by_the_head(db: Database) -> None:
    with db.write() as tx:
        tx.conn.execute(delete(audit_log).where(audit_log.c.seq >= 5))
    report = _verify(db)
    assert (report.ok, report.bad_seq) == (False, 5)
    assert "missing from the end" in (report.problem or "")


def test_deleting_the_tail_and_fixing_the_head_is_caught_by_a_pinned_head(db: Database) -> None:
    pinned = _verify(db)
    with db.write() as tx:
        last = tx.conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 4)).scalar_one()
        tx.conn.execute(delete(audit_log).where(audit_log.c.seq >= 5))
        tx.conn.execute(update(audit_head).values(seq=4, hash=last))
    assert _verify(db).ok  # the chain alone cannot tell
    report = _verify(db, expect=(pinned.head_seq, pinned.head_hash))
    assert (report.ok, report.bad_seq) == (False, 6)


def test_reordering_entries_is_detected(db: Database) -> None:
    with db.write() as tx:
        rows = {r.seq: r for r in tx.conn.execute(select(audit_log).where(audit_log.c.seq.in_([2, 5])))}
        for seq, other in ((2, 5), (5, 2)):
            r = rows[other]
            tx.conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(
                at=r.at, actor=r.actor, action=r.action, target=r.target, details=r.details, source=r.source,
                hash=r.hash))
    report = _verify(db)
    assert (report.ok, report.bad_seq) == (False, 2)


def test_inserting_an_entry_is_detected(db: Database) -> None:
    """Inserting means renumbering what follows; even with a correct-looking hash the next entry breaks."""
    with db.write() as tx:
        rows = tx.conn.execute(select(audit_log).where(audit_log.c.seq >= 3).order_by(audit_log.c.seq.desc())).all()
        for r in rows:
            tx.conn.execute(update(audit_log).where(audit_log.c.seq == r.seq).values(seq=r.seq + 1))
        prev = tx.conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 2)).scalar_one()
        forged = audit.entry_hash(prev, seq=3, at="2025-01-01T00:00:00.000000Z", actor="mallory", action="x",
                                  target="", details={}, source=None)
        tx.conn.execute(audit_log.insert().values(seq=3, at="2025-01-01T00:00:00.000000Z", actor="mallory",
                                                  action="x", target="", details="{}", source=None, hash=forged))
        tx.conn.execute(update(audit_head).values(seq=7))
    report = _verify(db)
    assert (report.ok, report.bad_seq) == (False, 4)


def test_appends_continue_the_chain_after_verification(db: Database) -> None:
    with db.write() as tx:
        audit.record(tx, actor="admin", action="user.create", target="x")
        audit.record(tx, actor="admin", action="user.update", target="x")
    assert _verify(db).ok
    with db.read() as conn:
        newest = audit.entries(conn, limit=3)
        assert [(e.seq, e.action) for e in newest] == [(8, "user.update"), (7, "user.create"), (6, "zone.create")]
        assert newest[0].at == newest[1].at  # one transaction, one time
        assert [e.seq for e in audit.entries(conn, before=3)] == [2, 1]
        assert {e.actor for e in audit.entries(conn, actor="user1")} == {"user1"}


def test_a_rolled_back_change_leaves_no_entry(db: Database) -> None:
    def fail() -> None:
        with db.write() as tx:
            audit.record(tx, actor="admin", action="user.create", target="x")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        fail()
    report = _verify(db)
    assert (report.ok, report.entries) == (True, 6)


def test_concurrent_appends_stay_one_chain(db_url: str) -> None:
    db = Database.open(db_url)
    errors = write_concurrently(db, writers=4, each=15,
                                write=lambda tx, n, i: audit.record(tx, actor=f"w{n}", action="x", target=str(i)))
    try:
        assert errors == []
        report = _verify(db)
        assert report.ok, report.summary()
        assert report.entries == 60
    finally:
        db.close()


def test_audit_verify_command(db_url: str, tmp_path: Path) -> None:
    from loa.control_plane.commands import audit as audit_group

    database = Database.open(db_url)
    _fill(database, 3)
    runner = CliRunner()
    ok = runner.invoke(audit_group, ["verify", "--db", db_url])
    assert ok.exit_code == 0, ok.output
    assert "intact: 3 entries" in ok.output
    head = ok.output.split("head ")[-1].split()[0]
    pinned = runner.invoke(audit_group, ["verify", "--db", db_url, "--expect-head", head])
    assert pinned.exit_code == 0, pinned.output
    with database.write() as tx:
        tx.conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))
    database.close()
    bad = runner.invoke(audit_group, ["verify", "--db", db_url])
    assert bad.exit_code == 1
    assert "BROKEN at entry 2" in bad.output
    assert "Traceback" not in bad.output
    malformed = runner.invoke(audit_group, ["verify", "--db", db_url, "--expect-head", "nonsense"])
    assert malformed.exit_code == 2


def test_audit_verify_command_with_a_data_dir(tmp_path: Path) -> None:
    from loa.control_plane.commands import audit as audit_group

    database = Database.open(data_dir=tmp_path)
    _fill(database, 2)
    database.close()
    result = CliRunner().invoke(audit_group, ["verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    missing = CliRunner().invoke(audit_group, ["verify", "--data-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert "no database" in missing.output
