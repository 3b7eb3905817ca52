"""Library (content, items, playlists) with its approval state, schedule entries and targets, scheduler firings.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _cls_lvl(table: str) -> list[sa.CheckConstraint]:
    return [sa.CheckConstraint("cls >= 0 AND cls <= 2", name=f"ck_{table}_cls"),
            sa.CheckConstraint("lvl >= 0 AND lvl <= 3", name=f"ck_{table}_lvl")]


def upgrade() -> None:
    op.create_table(
        "library_content",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("loudness_centi_lufs", sa.Integer(), nullable=True),
        sa.Column("gain_centi_db", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        _time("created_at"),
        sa.PrimaryKeyConstraint("sha256", name="pk_library_content"),
        sa.CheckConstraint("size_bytes >= 0", name="ck_library_content_size_not_negative"),
    )

    op.create_table(
        "library_items",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("cls", sa.Integer(), nullable=False),
        sa.Column("lvl", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("author", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.String(64), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("original_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("reviewed_by", sa.String(100), nullable=True),
        _time("reviewed_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_library_items"),
        sa.ForeignKeyConstraint(["zone"], ["zones.code"], name="fk_library_items_zone_zones", ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["content"], ["library_content.sha256"],
                                name="fk_library_items_content_library_content", ondelete="RESTRICT"),
        sa.CheckConstraint("kind IN ('audio', 'text', 'image', 'playlist')", name="ck_library_items_kind"),
        sa.CheckConstraint("state IN ('draft', 'submitted', 'approved', 'rejected')", name="ck_library_items_state"),
        *_cls_lvl("library_items"),
        sa.CheckConstraint("title <> ''", name="ck_library_items_title_not_empty"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_library_items_zone", "library_items", ["zone"])
    op.create_index("ix_library_items_state", "library_items", ["state"])

    op.create_table(
        "playlist_members",
        sa.Column("playlist_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("playlist_id", "position", name="pk_playlist_members"),
        sa.ForeignKeyConstraint(["playlist_id"], ["library_items.id"],
                                name="fk_playlist_members_playlist_id_library_items", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["library_items.id"],
                                name="fk_playlist_members_item_id_library_items", ondelete="RESTRICT"),
        sa.CheckConstraint("position >= 0", name="ck_playlist_members_position_not_negative"),
    )
    op.create_index("ix_playlist_members_item_id", "playlist_members", ["item_id"])

    op.create_table(
        "schedule_entries",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("start_local", sa.String(19), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("rrule", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        _time("valid_from", nullable=True),
        _time("valid_until", nullable=True),
        sa.Column("cls", sa.Integer(), nullable=False),
        sa.Column("lvl", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("active_from"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_entries"),
        sa.ForeignKeyConstraint(["item_id"], ["library_items.id"], name="fk_schedule_entries_item_id_library_items",
                                ondelete="RESTRICT"),
        sa.CheckConstraint("policy IN ('resume', 'drop')", name="ck_schedule_entries_policy"),
        *_cls_lvl("schedule_entries"),
        sa.CheckConstraint("duration_ms IS NULL OR duration_ms > 0", name="ck_schedule_entries_duration_positive"),
        sa.CheckConstraint("title <> ''", name="ck_schedule_entries_title_not_empty"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_schedule_entries_item_id", "schedule_entries", ["item_id"])

    op.create_table(
        "schedule_targets",
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", "zone", name="pk_schedule_targets"),
        sa.ForeignKeyConstraint(["entry_id"], ["schedule_entries.id"],
                                name="fk_schedule_targets_entry_id_schedule_entries", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["zone"], ["zones.code"], name="fk_schedule_targets_zone_zones", ondelete="RESTRICT"),
    )
    op.create_index("ix_schedule_targets_zone", "schedule_targets", ["zone"])

    op.create_table(
        "schedule_firings",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        _time("occurrence_at"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("broadcast_ids", sa.JSON(), nullable=True),
        sa.Column("detail", sa.String(500), nullable=True),
        _time("claimed_at"),
        _time("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_firings"),
        sa.CheckConstraint("status IN ('claimed', 'started', 'failed', 'missed', 'blocked')",
                           name="ck_schedule_firings_status"),
    )
    op.create_index("ix_schedule_firings_entry_id_occurrence_at", "schedule_firings", ["entry_id", "occurrence_at"],
                    unique=True)
    op.create_index("ix_schedule_firings_status", "schedule_firings", ["status"])
    op.create_index("ix_schedule_firings_occurrence_at", "schedule_firings", ["occurrence_at"])


def downgrade() -> None:
    for table in ("schedule_firings", "schedule_targets", "schedule_entries", "playlist_members", "library_items",
                  "library_content"):
        op.drop_table(table)
