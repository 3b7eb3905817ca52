"""What devices report, written back to the database: :class:`ReportWriter`, the queue between the streamer and the
tables inside `loa serve` (:mod:`loa.control_plane.dataplane`).

* ``DeviceOnline`` / ``DeviceOffline``, ``HelloReceived`` and ``TelemetryReported`` go to the device's status
  (:func:`loa.control_plane.devices.record_statuses`, one batch per transaction); an offline device also gets an
  as-played entry, since whatever it played stopped there.
* ``StateReported`` goes to the as-played log (:func:`loa.control_plane.asplayed.record_many`), in order; a state
  naming a source the log does not know is dropped and counted ``unknown_source``.
* ``BroadcastEnded`` closes the broadcast in the broadcast log, after the as-played entries that came before it.

Events are queued as the streamer emits them (:meth:`ReportWriter.accept`, on the event loop, never blocking it) and
written in batches of at most ``batch`` from a worker thread. A report about a device the database does not know
(deleted meanwhile) is dropped and counted ``unknown_device``.

Failure semantics: a batch whose transaction fails is logged and written again one report at a time, each in a
transaction of its own, so that one bad report does not cost the others; a report that still fails is dropped and
counted under its error's name. Nothing half-written stays: each transaction commits whole or not at all.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from loa.control_plane import asplayed
from loa.control_plane import devices as cp_devices
from loa.control_plane.db import Database
from loa.control_plane.db.schema import PLAYED_SOURCES
from loa.control_plane.db.schema import devices as devices_table
from loa.control_plane.errors import InvalidError, NotFoundError
from loa.protocol.session import device_id
from loa.streamer.status import (
    BroadcastEnded,
    DeviceOffline,
    DeviceOnline,
    HelloReceived,
    StateReported,
    StreamerEvent,
    TelemetryReported,
)

__all__ = ["GATHER_S", "ReportWriter"]

log = logging.getLogger("loa.control_plane.dataplane")

GATHER_S = 0.2  # after a write, how long reports gather before the next batch

_WRITTEN = (DeviceOnline, DeviceOffline, HelloReceived, TelemetryReported, StateReported, BroadcastEnded)
_ERRORS = (SQLAlchemyError, InvalidError, NotFoundError)


class ReportWriter:
    """The queue of device reports and its writer (see the module docstring).

    ``written`` counts the reports stored, ``dropped`` those given up, by reason."""

    def __init__(self, db: Database, *, batch: int = 500) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.db = db
        self.batch = batch
        self.dropped: Counter[str] = Counter()
        self.written = 0
        self._queue: deque[StreamerEvent] = deque()
        self._ready: anyio.Event | None = None

    def __len__(self) -> int:
        """Reports waiting to be written."""
        return len(self._queue)

    def accept(self, event: StreamerEvent) -> None:
        """Queue ``event`` if it is one that is written (others are ignored); wakes :meth:`run`."""
        if isinstance(event, _WRITTEN):
            self._queue.append(event)
            if self._ready is not None:
                self._ready.set()

    async def run(self) -> None:
        """Write reports as they come, in batches, until cancelled."""
        while True:
            self._ready = anyio.Event()
            if not self._queue:
                await self._ready.wait()
            await self.flush()
            await anyio.sleep(GATHER_S)

    async def flush(self) -> None:
        """Write every queued report (from a worker thread)."""
        while self._queue:
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), self.batch))]
            await anyio.to_thread.run_sync(self.write_batch, batch, datetime.now(UTC))

    def write_batch(self, batch: list[StreamerEvent], now: datetime) -> None:
        """Write ``batch`` in one transaction, else one report at a time (see the module docstring)."""
        try:
            self._commit(batch, now)
            return
        except _ERRORS as exc:
            log.warning("report batch failed (%s); writing one at a time", type(exc).__name__)
        for event in batch:
            try:
                self._commit([event], now)
            except _ERRORS as exc:
                self.dropped[type(exc).__name__] += 1

    def _commit(self, events: list[StreamerEvent], now: datetime) -> None:
        """Write ``events`` in one transaction; the counts move only once it committed."""
        skipped: Counter[str] = Counter()
        with self.db.write() as tx:
            _write(tx, events, _known(tx, events), now, skipped)
        self.dropped.update(skipped)
        self.written += len(events) - skipped["unknown_device"]


def _write(tx: Any, events: list[StreamerEvent], known: set[str], now: datetime, skipped: Counter[str]) -> None:
    """Write ``events`` in ``tx``: the devices' status changes as one batch, their as-played reports in batches (in
    order, each ending where a broadcast's end is recorded). What is left out is counted in ``skipped``."""
    updates: list[cp_devices.StatusUpdate] = []
    played: list[tuple[str, asplayed.Report]] = []
    for event in events:
        if isinstance(event, BroadcastEnded):
            asplayed.record_many(tx, played)
            played = []
            asplayed.broadcast_ended(tx, event.bid, at=now, reason=event.reason[:32])
            continue
        ident = device_id(event.device)
        if ident not in known:
            skipped["unknown_device"] += 1
            continue
        if isinstance(event, DeviceOnline):
            updates.append(cp_devices.StatusUpdate(ident, online=True,
                                                   reason="restarted" if event.restarted else "session"))
        elif isinstance(event, DeviceOffline):
            updates.append(cp_devices.StatusUpdate(ident, online=False, reason=event.reason[:64]))
            played.append((ident, asplayed.DeviceOffline(at=now)))
        elif isinstance(event, HelloReceived):
            hello = event.hello
            updates.append(cp_devices.StatusUpdate(ident, status={"model": hello.model, "fw": hello.fw,
                                                                  "caps": list(hello.caps)}))
        elif isinstance(event, TelemetryReported):
            values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(event.values).items()
                      if v is not None}
            updates.append(cp_devices.StatusUpdate(ident, status=values))
        elif isinstance(event, StateReported):
            for report in asplayed.from_message(event.state):
                if isinstance(report, asplayed.StateReport) and report.src not in (*PLAYED_SOURCES, "idle"):
                    skipped["unknown_source"] += 1
                    continue
                played.append((ident, report))
    asplayed.record_many(tx, played)
    if updates:
        cp_devices.record_statuses(tx, updates)


def _known(tx: Any, batch: list[StreamerEvent]) -> set[str]:
    """The ids of the batch's devices that the database has."""
    ids = {device_id(e.device) for e in batch if not isinstance(e, BroadcastEnded)}
    if not ids:
        return set()
    rows = tx.conn.execute(select(devices_table.c.id).where(devices_table.c.id.in_(sorted(ids)))).all()
    return {r.id for r in rows}
