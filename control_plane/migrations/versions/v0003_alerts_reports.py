"""Alerts (composition, approval, signed form), the broadcast log and the per-device as-played log.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cls", sa.Integer(), nullable=False),
        sa.Column("lvl", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("content_id", sa.String(64), nullable=True),
        sa.Column("library_item", sa.Integer(), nullable=True),
        sa.Column("live_port", sa.Integer(), nullable=True),
        sa.Column("ttl_s", sa.Integer(), nullable=False),
        sa.Column("preroll_ms", sa.Integer(), nullable=False),
        sa.Column("issuer_scope", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        _time("created_at"),
        sa.Column("triggered_by", sa.String(100), nullable=True),
        _time("triggered_at", nullable=True),
        sa.Column("approved_by", sa.String(100), nullable=True),
        _time("approved_at", nullable=True),
        sa.Column("cancelled_by", sa.String(100), nullable=True),
        _time("cancelled_at", nullable=True),
        sa.Column("wire_id", sa.String(64), nullable=True),
        sa.Column("kid", sa.String(16), nullable=True),
        sa.Column("bid", sa.BigInteger(), nullable=True),
        _time("issued_at", nullable=True),
        _time("expires_at", nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("sig", sa.LargeBinary(), nullable=True),
        sa.Column("cancel_body", sa.LargeBinary(), nullable=True),
        sa.Column("cancel_sig", sa.LargeBinary(), nullable=True),
        sa.Column("dispatch_error", sa.String(300), nullable=True),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("wire_id", name="uq_alerts_wire_id"),
        sa.CheckConstraint("state IN ('draft', 'pending_approval', 'approved', 'active', 'failed', 'cancelled', "
                           "'expired')", name="ck_alerts_state"),
        sa.CheckConstraint("status IN ('actual', 'exercise', 'test')", name="ck_alerts_status"),
        sa.CheckConstraint("cls >= 0 AND cls <= 2", name="ck_alerts_cls"),
        sa.CheckConstraint("lvl >= 0 AND lvl <= 3", name="ck_alerts_lvl"),
        sa.CheckConstraint("(content_id IS NULL AND live_port IS NOT NULL) OR "
                           "(content_id IS NOT NULL AND live_port IS NULL)", name="ck_alerts_one_audio"),
        sa.CheckConstraint("ttl_s >= 60 AND ttl_s <= 86400", name="ck_alerts_ttl"),
        sa.CheckConstraint("preroll_ms >= 0 AND preroll_ms <= 120000", name="ck_alerts_preroll"),
    )
    op.create_index("ix_alerts_state", "alerts", ["state"])

    op.create_table(
        "alert_zones",
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "zone", name="pk_alert_zones"),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name="fk_alert_zones_alert_id_alerts",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_alert_zones_zone", "alert_zones", ["zone"])

    op.create_table(
        "broadcast_log",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("bid", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("content_id", sa.String(64), nullable=True),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("cls", sa.Integer(), nullable=False),
        sa.Column("lvl", sa.Integer(), nullable=False),
        sa.Column("zones", sa.JSON(), nullable=False),
        _time("started_at"),
        _time("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_broadcast_log"),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name="fk_broadcast_log_alert_id_alerts",
                                ondelete="SET NULL"),
        sa.CheckConstraint("kind IN ('alert', 'live', 'scheduled', 'relay')", name="ck_broadcast_log_kind"),
    )
    op.create_index("ix_broadcast_log_bid", "broadcast_log", ["bid"])

    op.create_table(
        "as_played",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("device_id", sa.String(16), nullable=False),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("bid", sa.BigInteger(), nullable=True),
        sa.Column("src", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("content_id", sa.String(64), nullable=True),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("cls", sa.Integer(), nullable=True),
        sa.Column("lvl", sa.Integer(), nullable=True),
        _time("started_at"),
        _time("ended_at", nullable=True),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("interrupted_by", sa.String(200), nullable=True),
        sa.Column("interrupted_by_bid", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_as_played"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_as_played_device_id_devices",
                                ondelete="CASCADE"),
        sa.CheckConstraint("src IN ('ip', 'fm', 'line', 'local', 'mic')", name="ck_as_played_src"),
        sa.CheckConstraint("ended_ms IS NULL OR ended_ms >= started_ms", name="ck_as_played_ends_after_start"),
    )
    op.create_index("ix_as_played_device_id_started_ms", "as_played", ["device_id", "started_ms"])
    op.create_index("ix_as_played_zone_started_ms", "as_played", ["zone", "started_ms"])
    op.create_index("ix_as_played_started_ms", "as_played", ["started_ms"])


def downgrade() -> None:
    for table in ("as_played", "broadcast_log", "alert_zones", "alerts"):
        op.drop_table(table)
