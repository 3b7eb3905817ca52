"""Foundation: zones, devices, enrolment tokens, device status history, users, API tokens, audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS = "0" * 64
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "zones",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("parent", sa.String(64), nullable=True),
        sa.Column("level", sa.String(32), nullable=True),
        _time("created_at"),
        sa.PrimaryKeyConstraint("code", name="pk_zones"),
        sa.ForeignKeyConstraint(["parent"], ["zones.code"], name="fk_zones_parent_zones", ondelete="RESTRICT"),
        sa.CheckConstraint("code <> ''", name="ck_zones_code_not_empty"),
        sa.CheckConstraint("name <> ''", name="ck_zones_name_not_empty"),
        sa.CheckConstraint("parent IS NULL OR parent <> code", name="ck_zones_not_own_parent"),
    )
    op.create_index("ix_zones_parent", "zones", ["parent"])

    op.create_table(
        "devices",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("zone", sa.String(64), nullable=True),
        _time("enrolled_at"),
        sa.Column("enrolled_by", sa.String(100), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("online", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("faulty", sa.Boolean(), nullable=False, server_default=sa.false()),
        _time("last_seen", nullable=True),
        sa.Column("status", sa.JSON(), nullable=True),
        _time("status_at", nullable=True),
        sa.Column("model", sa.String(64), nullable=True),
        sa.Column("firmware", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("public_key", name="uq_devices_public_key"),
        sa.ForeignKeyConstraint(["zone"], ["zones.code"], name="fk_devices_zone_zones", ondelete="RESTRICT"),
        sa.CheckConstraint("kind IN ('speaker', 'board')", name="ck_devices_kind"),
    )
    op.create_index("ix_devices_zone", "devices", ["zone"])
    op.create_index("ix_devices_online", "devices", ["online"])

    op.create_table(
        "enrolment_tokens",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hint", sa.String(8), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(100), nullable=False),
        _time("created_at"),
        _time("expires_at"),
        _time("redeemed_at", nullable=True),
        _time("revoked_at", nullable=True),
        sa.Column("device_id", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrolment_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_enrolment_tokens_token_hash"),
        sa.ForeignKeyConstraint(["zone"], ["zones.code"], name="fk_enrolment_tokens_zone_zones",
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_enrolment_tokens_device_id_devices",
                                ondelete="SET NULL"),
        sa.CheckConstraint("kind IS NULL OR kind IN ('speaker', 'board')", name="ck_enrolment_tokens_kind"),
    )
    op.create_index("ix_enrolment_tokens_zone", "enrolment_tokens", ["zone"])
    op.create_index("ix_enrolment_tokens_expires_at", "enrolment_tokens", ["expires_at"])

    op.create_table(
        "device_status_history",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("device_id", sa.String(16), nullable=False),
        _time("at"),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_device_status_history"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_device_status_history_device_id_devices",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_device_status_history_device_id_at", "device_status_history", ["device_id", "at"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(64), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()),
        _time("created_at"),
        _time("password_changed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.ForeignKeyConstraint(["scope"], ["zones.code"], name="fk_users_scope_zones", ondelete="RESTRICT"),
        sa.CheckConstraint(
            "role IN ('admin', 'noc', 'editor', 'approver', 'scheduler', 'viewer', 'vendor')", name="ck_users_role"),
        sa.CheckConstraint("username <> ''", name="ck_users_username_not_empty"),
    )
    op.create_index("ix_users_scope", "users", ["scope"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        _time("created_at"),
        _time("expires_at", nullable=True),
        _time("last_used_at", nullable=True),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"),
        sa.CheckConstraint("kind IN ('session', 'api')", name="ck_api_tokens_kind"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
        sa.CheckConstraint("seq > 0", name="ck_audit_log_seq_positive"),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])


def downgrade() -> None:
    for table in ("audit_head", "audit_log", "api_tokens", "users", "device_status_history", "enrolment_tokens",
                  "devices", "zones"):
        op.drop_table(table)
