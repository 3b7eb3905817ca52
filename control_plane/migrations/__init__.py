"""Alembic migrations of the control plane's schema; run by :func:`loa.control_plane.db.migrate`, never by hand."""
