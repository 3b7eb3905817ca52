"""Device reports written back to the database (:mod:`loa.control_plane.device_reports`): each kind lands where it
belongs, reports about unknown devices are dropped and counted, a failed batch is written one report at a time so
that only the bad report is lost, and nothing is counted twice (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from loa.control_plane import devices
from loa.control_plane.auth import Actor
from loa.control_plane.db.schema import as_played, device_status_history
from loa.control_plane.device_reports import ReportWriter
from loa.control_plane.errors import NotFoundError
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, fast_settings
from loa.protocol.control import Hello, State, TelemetryValues
from loa.protocol.session import device_id
from loa.streamer.status import (
    DeviceOffline,
    DeviceOnline,
    HelloReceived,
    StateReported,
    StreamerEvent,
    TelemetryReported,
)

NOW = datetime(2026, 9, 1, 3, 0, tzinfo=UTC)
ZONE = "20194"


@pytest.fixture
def cp(db_url: str, tmp_path: Path) -> Any:
    control = ControlPlane(fast_settings(tmp_path / "data", db_url))
    Seed(control).province()
    yield control
    control.close()


def _enrol(cp: ControlPlane, n: int) -> list[bytes]:
    keys = [bytes([i + 1]) * 32 for i in range(n)]
    with cp.db.write() as tx:
        for key in keys:
            devices.enrol(tx, Actor("test"), public_key=key, kind="speaker", zone=ZONE)
    return keys


def _record(cp: ControlPlane, key: bytes) -> devices.DeviceRecord:
    with cp.db.read() as conn:
        return devices.get(conn, device_id(key))


def _count(cp: ControlPlane, table: Any, key: bytes) -> int:
    with cp.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)
                                .where(table.c.device_id == device_id(key))).scalar_one())


def _poison(key: bytes) -> StateReported:
    """A state the as-played log refuses (a bid beyond uint32): its transaction fails."""
    return StateReported(key, State(bid=1 << 33, src="ip", since=0))


def test_each_kind_of_report_lands_where_it_belongs(cp: ControlPlane) -> None:
    a, b = _enrol(cp, 2)
    stranger = b"\xee" * 32
    writer = ReportWriter(cp.db, batch=100)
    writer.write_batch([
        DeviceOnline(a, ("127.0.0.1", 5000), boot=1, restarted=False),
        HelloReceived(a, Hello(kind="speaker", model="LX-9", fw="2.1.0", caps=("opus",))),
        TelemetryReported(a, TelemetryValues(net="4g", uptime_s=120)),
        StateReported(a, State(bid=None, src="fm", since=0)),
        DeviceOnline(stranger, None, boot=1, restarted=False),
        TelemetryReported(stranger, TelemetryValues(net="lan")),
        DeviceOnline(b, None, boot=1, restarted=True),
        DeviceOffline(b, reason="timeout"),
    ], NOW)
    first = _record(cp, a)
    assert first.online
    assert (first.firmware, first.model) == ("2.1.0", "LX-9")
    assert first.status is not None
    assert (first.status["net"], first.status["uptime_s"]) == ("4g", 120)
    assert _count(cp, as_played, a) == 1
    second = _record(cp, b)
    assert not second.online
    assert _count(cp, device_status_history, b) == 2  # online, then offline
    assert writer.dropped == Counter(unknown_device=2)
    assert writer.written == 6


def test_a_failed_batch_is_written_one_report_at_a_time_and_loses_only_the_bad_one(cp: ControlPlane) -> None:
    a, b = _enrol(cp, 2)
    stranger = b"\xee" * 32
    writer = ReportWriter(cp.db, batch=100)
    writer.write_batch([
        DeviceOnline(a, None, boot=1, restarted=False),
        _poison(a),
        TelemetryReported(stranger, TelemetryValues(net="lan")),
        TelemetryReported(b, TelemetryValues(net="lan")),
    ], NOW)
    assert _record(cp, a).online
    assert (_record(cp, b).status or {}).get("net") == "lan"
    assert _count(cp, as_played, a) == 0  # the bad state: nothing of it written
    # the unknown device is counted once, though its report went through two transactions
    assert writer.dropped == Counter(InvalidError=1, unknown_device=1)
    assert writer.written == 2


def test_the_queue_writes_in_batches_and_ignores_what_is_not_a_report(cp: ControlPlane) -> None:
    keys = _enrol(cp, 5)
    writer = ReportWriter(cp.db, batch=2)
    for key in keys:
        writer.accept(DeviceOnline(key, None, boot=1, restarted=False))
    writer.accept(object())  # type: ignore[arg-type]  # not a report: ignored
    assert len(writer) == 5

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            with anyio.fail_after(20):
                while writer.written < 5:
                    await anyio.sleep(0.01)
            writer.accept(DeviceOffline(keys[0], reason="bye"))  # after the queue ran dry: wakes it again
            with anyio.fail_after(20):
                while writer.written < 6:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert len(writer) == 0
    assert [_record(cp, key).online for key in keys] == [False, True, True, True, True]


def test_a_batch_size_below_one_is_refused(cp: ControlPlane) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReportWriter(cp.db, batch=0)


_KIND = st.sampled_from(["online", "offline", "telemetry", "state", "poison"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(st.integers(0, 3), _KIND, st.integers(0, 9)), max_size=12),
       batch=st.integers(1, 5))
def test_every_report_is_written_or_counted_once(cp: ControlPlane, events: list[tuple[int, str, int]],
                                                 batch: int) -> None:
    """Whatever the mix (device 3 unknown, some reports bad) and the batch size, each report is either stored or
    dropped with its reason, exactly once, and a device's last online report is what the database says."""
    keys = [*_enrolled(cp, 3), b"\xee" * 32]  # the fixture's database outlives one example
    made: list[StreamerEvent] = []
    for device, kind, n in events:
        key = keys[device]
        made.append({"online": DeviceOnline(key, None, boot=n, restarted=False),
                     "offline": DeviceOffline(key, reason=f"r{n}"),
                     "telemetry": TelemetryReported(key, TelemetryValues(uptime_s=n)),
                     "state": StateReported(key, State(bid=None, src="line", since=n)),
                     "poison": _poison(key)}[kind])
    writer = ReportWriter(cp.db, batch=batch)
    for start in range(0, len(made), batch):
        writer.write_batch(made[start:start + batch], NOW)
    unknown = sum(device == 3 for device, _, _ in events)
    bad = sum(device != 3 and kind == "poison" for device, kind, _ in events)
    assert writer.dropped == Counter({k: v for k, v in (("unknown_device", unknown), ("InvalidError", bad)) if v})
    assert writer.written == len(events) - unknown - bad
    for device in range(3):
        flips = [kind == "online" for d, kind, _ in events if d == device and kind in ("online", "offline")]
        if flips:
            assert _record(cp, keys[device]).online is flips[-1]


def _enrolled(cp: ControlPlane, n: int) -> list[bytes]:
    """``_enrol(cp, n)`` once per database."""
    try:
        _record(cp, bytes([1]) * 32)
    except NotFoundError:
        return _enrol(cp, n)
    return [bytes([i + 1]) * 32 for i in range(n)]
