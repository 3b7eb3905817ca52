"""Opening the database: an embedded SQLite file by default, PostgreSQL (psycopg 3) by URL.

SQLite is opened in WAL mode with ``synchronous=FULL``, foreign keys on and a busy timeout; every transaction
is begun explicitly (``BEGIN IMMEDIATE`` for writes, plain ``BEGIN`` for reads) so that a write transaction
holds the write lock from its first statement and SQLite's lock upgrade deadlock cannot happen. With these
settings a transaction is either wholly in the file after ``COMMIT`` returns or not there at all, whatever
moment the process is killed at.

Failure semantics: :func:`open_database` raises :class:`StorageError` (one line, no traceback material) for a
URL it does not support or a data directory it cannot create; errors of the database itself surface later as
SQLAlchemy exceptions.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["BUSY_TIMEOUT_MS", "StorageError", "default_url", "open_engine", "read", "write"]

BUSY_TIMEOUT_MS = 15_000
_READ_OPTION = "loa_read_only"


class StorageError(RuntimeError):
    """The database cannot be opened as configured (bad URL, unwritable data directory)."""


def default_url(data_dir: Path) -> str:
    """The embedded database of a data directory: ``DATA_DIR/loa.db``."""
    return f"sqlite:///{(data_dir / 'loa.db').resolve()}"


def open_engine(url: str) -> Engine:
    """An engine for ``url``: ``sqlite:///PATH`` or ``postgresql[+psycopg]://...`` (``postgres://`` accepted)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if backend != "sqlite" or parsed.get_driver_name() not in {"pysqlite", ""}:
        raise StorageError(f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or postgresql://...")
    if not parsed.database or parsed.database == ":memory:":
        raise StorageError("SQLite needs a file (sqlite:///PATH): an in-memory database would be lost on exit")
    path = Path(parsed.database)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the data directory {str(path.parent)!r}: {exc.strerror}") from None
    engine = create_engine(
        parsed.set(drivername="sqlite+pysqlite"),
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        pool_size=8,
        max_overflow=8,
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the driver (its implicit BEGIN comes too late for DDL and locks).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        _enter_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_OPTION) else "BEGIN IMMEDIATE")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed when the block ends, rolled back (nothing written) if it raises."""
    with engine.begin() as conn:
        yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """One read transaction (a consistent snapshot); it must not write."""
    with engine.connect().execution_options(**{_READ_OPTION: True}) as conn, conn.begin():
        yield conn


def _enter_wal(cursor: Any) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once,
    # without its busy handler, while another connection holds any lock (several processes or threads
    # opening a new data directory at the same moment). WAL is a property of the file: once one connection
    # has set it, the pragma is a no-op for the others. So retry, within the same busy timeout.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
