"""Storage: migrations, the schema they build, constraints and transactions, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from loa.control_plane.db import Database, StorageError, open_engine
from loa.control_plane.db.migrate import head_revision, migrate
from loa.control_plane.db.schema import devices, metadata, zones
from loa.control_plane.testing import write_concurrently

NOW = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)


def test_migrations_run_once_and_are_idempotent(empty_db_url: str) -> None:
    engine = open_engine(empty_db_url)
    try:
        first = migrate(engine)
        second = migrate(engine)
    finally:
        engine.dispose()
    assert first.before is None
    assert first.after == head_revision()
    assert first.changed
    assert not second.changed


def test_migrated_schema_matches_the_tables_the_code_uses(empty_db_url: str) -> None:
    engine = open_engine(empty_db_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_concurrent_starts_migrate_once(empty_db_url: str) -> None:
    results, errors = [], []

    def start() -> None:
        engine = open_engine(empty_db_url)
        try:
            results.append(migrate(engine))
        except Exception as exc:  # noqa: BLE001 (collected and asserted below)
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sum(r.changed for r in results) == 1


def test_new_sqlite_files_opened_by_several_threads_at_once_all_open(tmp_path: Path) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite refuses it at once (no busy wait) to
    # a connection that races another one doing the same; each such race must end with every opener in WAL.
    def open_and_check(url: str, modes: list[object], errors: list[Exception]) -> None:
        engine = open_engine(url)
        try:
            with engine.connect() as conn:
                modes.append(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        except Exception as exc:  # noqa: BLE001 (collected and asserted below)
            errors.append(exc)
        finally:
            engine.dispose()

    modes: list[object] = []
    errors: list[Exception] = []
    for round_ in range(40):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        threads = [threading.Thread(target=open_and_check, args=(url, modes, errors)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert modes == ["wal"] * 240


def test_a_newer_schema_is_refused(db_url: str) -> None:
    db = Database.open(db_url)
    try:
        with db.write() as tx:
            tx.conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(StorageError, match="newer loa"):
            migrate(db.engine)
    finally:
        db.close()


def test_foreign_keys_and_checks_are_enforced(db_url: str) -> None:
    db = Database.open(db_url)
    try:
        with pytest.raises(IntegrityError), db.write() as tx:
            tx.conn.execute(insert(zones).values(code="x", name="X", parent="missing", created_at=NOW))
        with pytest.raises(IntegrityError), db.write() as tx:
            tx.conn.execute(insert(zones).values(code="y", name="", created_at=NOW))
        with pytest.raises(IntegrityError), db.write() as tx:
            tx.conn.execute(insert(devices).values(id="0" * 16, public_key=b"k" * 32, kind="toaster",
                                                   enrolled_at=NOW, enrolled_by="t"))
        with db.read() as conn:
            assert conn.execute(select(zones)).all() == []
    finally:
        db.close()


def test_a_failed_transaction_leaves_nothing(db_url: str) -> None:
    db = Database.open(db_url)
    try:
        def fail() -> None:
            with db.write() as tx:
                tx.conn.execute(insert(zones).values(code="a", name="A", created_at=NOW))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            fail()
        with db.read() as conn:
            assert conn.execute(select(zones)).all() == []
    finally:
        db.close()


def test_times_are_aware_utc_both_ways(db_url: str) -> None:
    db = Database.open(db_url)
    hanoi = timezone(timedelta(hours=7))
    try:
        with db.write() as tx:
            tx.conn.execute(insert(zones).values(code="a", name="A", created_at=datetime(2025, 3, 1, 15, 30, 0,
                                                                                         123456, tzinfo=hanoi)))
        with db.read() as conn:
            stored = conn.execute(select(zones.c.created_at)).scalar_one()
        assert stored == datetime(2025, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
        assert stored.tzinfo is not None
        assert stored.utcoffset() == timedelta(0)
        with pytest.raises(StatementError, match="naive"), db.write() as tx:
            tx.conn.execute(insert(zones).values(code="b", name="B", created_at=datetime(2025, 3, 1)))
    finally:
        db.close()


def test_vietnamese_text_round_trips(db_url: str) -> None:
    db = Database.open(db_url)
    name = "Xã Hòa Hiệp Bắc — thôn Đồng Kè, Ủy ban nhân dân"
    try:
        with db.write() as tx:
            tx.conn.execute(insert(zones).values(code="a", name=name, created_at=NOW))
        with db.read() as conn:
            assert conn.execute(select(zones.c.name)).scalar_one() == name
    finally:
        db.close()


def test_sqlite_is_opened_durable(tmp_path: Path) -> None:
    db = Database.open(data_dir=tmp_path / "data")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert (tmp_path / "data" / "loa.db").exists()
    finally:
        db.close()


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://x@y/z", "unsupported database"),
    ("sqlite://", "needs a file"),
    ("sqlite:///:memory:", "needs a file"),
    ("not a url", "not a database URL"),
])
def test_bad_urls_are_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        open_engine(url)


def test_writers_on_sqlite_take_turns(tmp_path: Path) -> None:
    """Concurrent write transactions queue on the write lock instead of failing with 'database is locked'."""
    db = Database.open(data_dir=tmp_path)
    errors = write_concurrently(db, writers=6, each=20, write=lambda tx, n, i: tx.conn.execute(
        insert(zones).values(code=f"z{n}-{i}", name="Z", created_at=NOW)))
    try:
        assert errors == []
        with db.read() as conn:
            assert len(conn.execute(select(zones)).all()) == 120
    finally:
        db.close()
