"""Bring a database to the newest schema revision, at start, in one transaction.

Running it again is a no-op; two processes starting together take turns (PostgreSQL: an advisory lock; SQLite:
the write lock of ``BEGIN IMMEDIATE``), so the second finds the work done.

Failure semantics: if any step fails the whole upgrade rolls back and the database stays at its old revision.
A database whose revision this code does not know (written by a newer loa) raises :class:`StorageError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, text

from loa.control_plane.db.engine import StorageError, write

__all__ = ["Migration", "head_revision", "migrate"]

SCRIPT_LOCATION = "loa.control_plane:migrations"
_PG_LOCK_KEY = 0x6C6F615F6D696772  # "loa_migr"


@dataclass(frozen=True, slots=True)
class Migration:
    """What :func:`migrate` did: the revision before (None for an empty database) and after."""

    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def migrate(engine: Engine) -> Migration:
    """Upgrade the database behind ``engine`` to :func:`head_revision`."""
    config = _config()
    scripts = ScriptDirectory.from_config(config)
    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        if before is not None:
            try:
                scripts.get_revision(before)
            except CommandError:
                raise StorageError(
                    f"the database is at schema revision {before!r}, which this loa does not know: "
                    "it was written by a newer loa") from None
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    assert after is not None
    return Migration(before, after)
