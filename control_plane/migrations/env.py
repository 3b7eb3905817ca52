"""Alembic environment: migrate the connection that :func:`loa.control_plane.db.migrate` hands over.

The caller owns the connection and its transaction, so a whole upgrade commits at once or not at all (SQLite and
PostgreSQL both run DDL inside transactions). Offline (SQL script) mode is not offered.
"""

from __future__ import annotations

from alembic import context

from loa.control_plane.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through loa.control_plane.db.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
