"""The schema as SQLAlchemy Core tables: what the code queries, and what the migrations must produce.

The migrations in ``loa.control_plane.migrations`` create this schema; a test compares a migrated database with
these tables on SQLite and PostgreSQL, so the two cannot drift apart. Constraint names follow one convention so
that later migrations can name what they alter on both backends.

Times are aware UTC datetimes (:class:`UtcDateTime`), except the audit log's, which is the exact ISO text that
its hash covers.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from loa.control_plane.db.types import BigId, UtcDateTime

__all__ = [
    "CODE_LEN",
    "DEVICE_KINDS",
    "ROLES",
    "TOKEN_KINDS",
    "api_tokens",
    "audit_head",
    "audit_log",
    "device_status_history",
    "devices",
    "enrolment_tokens",
    "metadata",
    "users",
    "zones",
]

CODE_LEN = 64
NAME_LEN = 200
DEVICE_KINDS = ("speaker", "board")
ROLES = ("admin", "noc", "editor", "approver", "scheduler", "viewer", "vendor")
TOKEN_KINDS = ("session", "api")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


zones = Table(
    "zones", metadata,
    Column("code", String(CODE_LEN), primary_key=True),
    Column("name", String(NAME_LEN), nullable=False),
    Column("parent", String(CODE_LEN), ForeignKey("zones.code", ondelete="RESTRICT"), nullable=True, index=True),
    Column("level", String(32), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    CheckConstraint("code <> ''", name="code_not_empty"),
    CheckConstraint("name <> ''", name="name_not_empty"),
    CheckConstraint("parent IS NULL OR parent <> code", name="not_own_parent"),
)

devices = Table(
    "devices", metadata,
    Column("id", String(16), primary_key=True),
    Column("public_key", LargeBinary(32), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(NAME_LEN), nullable=False, server_default=""),
    Column("zone", String(CODE_LEN), ForeignKey("zones.code", ondelete="RESTRICT"), nullable=True, index=True),
    Column("enrolled_at", UtcDateTime(), nullable=False),
    Column("enrolled_by", String(100), nullable=False),
    Column("disabled", Boolean(), nullable=False, server_default=false()),
    Column("online", Boolean(), nullable=False, server_default=false()),
    Column("faulty", Boolean(), nullable=False, server_default=false()),
    Column("last_seen", UtcDateTime(), nullable=True),
    Column("status", JSON(), nullable=True),
    Column("status_at", UtcDateTime(), nullable=True),
    Column("model", String(64), nullable=True),
    Column("firmware", String(64), nullable=True),
    CheckConstraint(_in("kind", DEVICE_KINDS), name="kind"),
    Index(None, "online"),
)

enrolment_tokens = Table(
    "enrolment_tokens", metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("hint", String(8), nullable=False),
    Column("zone", String(CODE_LEN), ForeignKey("zones.code", ondelete="RESTRICT"), nullable=False, index=True),
    Column("kind", String(16), nullable=True),
    Column("name", String(NAME_LEN), nullable=False, server_default=""),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    Column("redeemed_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("device_id", String(16), ForeignKey("devices.id", ondelete="SET NULL"), nullable=True),
    CheckConstraint(f"kind IS NULL OR {_in('kind', DEVICE_KINDS)}", name="kind"),
)

device_status_history = Table(
    "device_status_history", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("device_id", String(16), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("online", Boolean(), nullable=False),
    Column("reason", String(64), nullable=True),
    Index(None, "device_id", "at"),
)

users = Table(
    "users", metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(NAME_LEN), nullable=False, server_default=""),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("scope", String(CODE_LEN), ForeignKey("zones.code", ondelete="RESTRICT"), nullable=True, index=True),
    Column("disabled", Boolean(), nullable=False, server_default=false()),
    Column("must_change_password", Boolean(), nullable=False, server_default=false()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("password_changed_at", UtcDateTime(), nullable=False),
    CheckConstraint(_in("role", ROLES), name="role"),
    CheckConstraint("username <> ''", name="username_not_empty"),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("user_id", Integer(), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(NAME_LEN), nullable=False, server_default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("last_used_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    CheckConstraint(_in("kind", TOKEN_KINDS), name="kind"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("seq", BigInteger(), primary_key=True, autoincrement=False),
    Column("at", String(32), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False),
    Column("details", Text(), nullable=False),
    Column("source", String(64), nullable=True),
    Column("hash", String(64), nullable=False),
    CheckConstraint("seq > 0", name="seq_positive"),
    Index(None, "action"),
    Index(None, "actor"),
    Index(None, "at"),
)

# One row (id 1): the sequence number and hash of the last audit entry. Locking it serialises appends, and
# comparing it with the log's tail detects entries cut off the end.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("seq", BigInteger(), nullable=False),
    Column("hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)
