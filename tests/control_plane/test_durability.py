"""No acknowledged record is lost or half-written when the writing process is killed (SIGKILL) at any moment.

A writer subprocess commits one multi-row transaction at a time (device, audit entry, status, history) and
prints each commit after it returns; the test kills it at random moments, restarts it, and finally checks that
every acknowledged record is present and intact, that nothing half-written exists, that the audit chain
verifies and (SQLite) that the file passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import importlib.util
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from loa.control_plane import audit, zones
from loa.control_plane.auth import Actor
from loa.control_plane.db import Database
from loa.control_plane.db.schema import audit_log, device_status_history, devices

WRITER = Path(__file__).with_name("durability_writer.py")
KILLS = 10


def _writer_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("durability_writer", WRITER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_and_kill(url: str, rng: random.Random) -> list[tuple[int, str]]:
    acked: list[tuple[int, str]] = []
    first = threading.Event()
    with subprocess.Popen([sys.executable, str(WRITER), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                n, ident = line.split()
                acked.append((int(n), ident))
                first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            started = first.wait(timeout=60)
            if started:
                time.sleep(rng.uniform(0.0, 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        reader.join(timeout=30)
        errors = proc.stderr.read() if proc.stderr is not None else ""
    assert started, f"the writer never acknowledged a write: {errors}"
    assert proc.returncode == -signal.SIGKILL
    return acked


def test_kill_9_during_writes_loses_nothing_acknowledged(db_url: str) -> None:
    writer = _writer_module()
    db = Database.open(db_url)
    with db.write() as tx:
        zones.create(tx, Actor("test"), code=writer.ZONE, name="Vùng thử")
    db.close()

    rng = random.Random(9)
    acked: dict[int, str] = {}
    for _ in range(KILLS):
        for n, ident in _run_and_kill(db_url, rng):
            assert n not in acked
            acked[n] = ident

    db = Database.open(db_url, migrate_schema=False)
    try:
        with db.read() as conn:
            rows = {r.id: r for r in conn.execute(select(devices))}
            history = dict(conn.execute(select(device_status_history.c.device_id, func.count())
                                        .group_by(device_status_history.c.device_id)).all())
            enrol_entries = {r.target for r in conn.execute(select(audit_log.c.target)
                                                            .where(audit_log.c.action == "device.enrol"))}
            report = audit.verify(conn)
            if db.dialect == "sqlite":
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        # Every acknowledged write is there, whole.
        for n, ident in acked.items():
            row = rows[ident]
            assert bytes(row.public_key) == writer.key_for(n)
            assert row.name == writer.name_for(n)
            assert row.online is True
            assert row.status == {"n": n, "fw": "1.0"}
            assert history[ident] == 1
            assert ident in enrol_entries
        # Whatever committed without being acknowledged (killed between commit and print) is whole too.
        numbers = sorted(row.status["n"] for row in rows.values())
        assert numbers == list(range(len(numbers)))
        assert len(rows) - len(acked) <= KILLS
        for row in rows.values():
            assert history.get(row.id) == 1
            assert row.id in enrol_entries
        assert report.ok, report.summary()
        assert report.entries == len(rows) + 1  # one zone.create, then one device.enrol per device
        print(f"\nkill -9 on {db.dialect}: {KILLS} kills, {len(acked)} acknowledged records checked, "
              f"{len(rows)} stored, audit chain of {report.entries} entries intact")
    finally:
        db.close()
