"""Storage: one schema on SQLite (embedded default) and PostgreSQL, Alembic migrations, transaction helpers.

:class:`Database` is what the rest of the control plane holds: an engine plus ``write()`` / ``read()``
transactions. A write transaction may collect events that are published only after it commits, so no listener
ever hears of a change that was rolled back. Migrations live in :mod:`loa.control_plane.db.migrate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from loa.control_plane.db import schema
from loa.control_plane.db.engine import StorageError, default_url, open_engine, read, write

__all__ = ["Database", "StorageError", "Tx", "default_url", "open_engine", "schema", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Tx:
    """One write transaction in progress: its connection, its time, work to do just before it commits, and the
    events to publish once it has."""

    conn: Connection
    now: datetime
    events: list[Any] = field(default_factory=list)
    before_commit: list[Callable[[], None]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def emit(self, event: Any) -> None:
        """Queue ``event``; it is published only if the transaction commits."""
        self.events.append(event)


class Database:
    """An engine with transaction helpers; ``publish`` receives each committed transaction's events."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now,
                 publish: Callable[[Sequence[Any]], None] | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.publish = publish

    @classmethod
    def open(cls, url: str | None = None, *, data_dir: Path | None = None, migrate_schema: bool = True,
             clock: Callable[[], datetime] = utc_now) -> Database:
        """Open ``url`` (or the data directory's SQLite file) and, by default, migrate it to the newest schema."""
        if url is None:
            if data_dir is None:
                raise StorageError("give a database URL or a data directory")
            url = default_url(data_dir)
        engine = open_engine(url)
        if migrate_schema:
            from loa.control_plane.db.migrate import migrate  # Alembic loads only when migrating

            try:
                migrate(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(engine, clock=clock)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction: all of it commits when the block ends, or none of it if the block raises."""
        with write(self.engine) as conn:
            tx = Tx(conn, self.clock())
            yield tx
            for hook in tx.before_commit:  # still inside the transaction: their writes commit with it
                hook()
        if tx.events and self.publish is not None:
            self.publish(tuple(tx.events))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (one consistent snapshot)."""
        with read(self.engine) as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()
