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
    "ALERT_STATES",
    "ALERT_STATUSES",
    "BROADCAST_KINDS",
    "CODE_LEN",
    "DEVICE_KINDS",
    "PLAYED_SOURCES",
    "ROLES",
    "TOKEN_KINDS",
    "alert_zones",
    "alerts",
    "api_tokens",
    "as_played",
    "audit_head",
    "audit_log",
    "broadcast_log",
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

# -- alerts and reports (migration 0003) ------------------------------------------------------------------------

ALERT_STATES = ("draft", "pending_approval", "approved", "active", "failed", "cancelled", "expired")
ALERT_STATUSES = ("actual", "exercise", "test")
BROADCAST_KINDS = ("alert", "live", "scheduled", "relay")
PLAYED_SOURCES = ("ip", "fm", "line", "local", "mic")

# An emergency alert from composition to its end; the signed body and signature are kept once approved.
alerts = Table(
    "alerts", metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("state", String(24), nullable=False),
    Column("status", String(16), nullable=False),
    Column("cls", Integer(), nullable=False),
    Column("lvl", Integer(), nullable=False),
    Column("title", String(NAME_LEN), nullable=False, server_default=""),
    Column("text", Text(), nullable=True),
    Column("content_id", String(64), nullable=True),
    Column("library_item", Integer(), nullable=True),
    Column("live_port", Integer(), nullable=True),
    Column("ttl_s", Integer(), nullable=False),
    Column("preroll_ms", Integer(), nullable=False),
    Column("issuer_scope", String(CODE_LEN), nullable=True),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("triggered_by", String(100), nullable=True),
    Column("triggered_at", UtcDateTime(), nullable=True),
    Column("approved_by", String(100), nullable=True),
    Column("approved_at", UtcDateTime(), nullable=True),
    Column("cancelled_by", String(100), nullable=True),
    Column("cancelled_at", UtcDateTime(), nullable=True),
    Column("wire_id", String(64), nullable=True, unique=True),
    Column("kid", String(16), nullable=True),
    Column("bid", BigInteger(), nullable=True),
    Column("issued_at", UtcDateTime(), nullable=True),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("body", LargeBinary(), nullable=True),
    Column("sig", LargeBinary(), nullable=True),
    Column("cancel_body", LargeBinary(), nullable=True),
    Column("cancel_sig", LargeBinary(), nullable=True),
    Column("dispatch_error", String(300), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint(_in("state", ALERT_STATES), name="state"),
    CheckConstraint(_in("status", ALERT_STATUSES), name="status"),
    CheckConstraint("cls >= 0 AND cls <= 2", name="cls"),
    CheckConstraint("lvl >= 0 AND lvl <= 3", name="lvl"),
    CheckConstraint("(content_id IS NULL AND live_port IS NOT NULL) OR (content_id IS NOT NULL AND live_port IS NULL)",
                    name="one_audio"),
    CheckConstraint("ttl_s >= 60 AND ttl_s <= 86400", name="ttl"),
    CheckConstraint("preroll_ms >= 0 AND preroll_ms <= 120000", name="preroll"),
    Index(None, "state"),
)

# The zones an alert targets (no foreign key: the record outlives a zone's deletion).
alert_zones = Table(
    "alert_zones", metadata,
    Column("alert_id", Integer(), ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True),
    Column("zone", String(CODE_LEN), primary_key=True),
    Index(None, "zone"),
)

# Broadcasts as the server started and stopped them; device as-played rows take what/class/level from here.
broadcast_log = Table(
    "broadcast_log", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("bid", BigInteger(), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("title", String(NAME_LEN), nullable=False, server_default=""),
    Column("content_id", String(64), nullable=True),
    Column("alert_id", Integer(), ForeignKey("alerts.id", ondelete="SET NULL"), nullable=True),
    Column("cls", Integer(), nullable=False),
    Column("lvl", Integer(), nullable=False),
    Column("zones", JSON(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("end_reason", String(32), nullable=True),
    CheckConstraint(_in("kind", BROADCAST_KINDS), name="kind"),
    Index(None, "bid"),
)

# What each device played, when, for how long, and what interrupted it. Times are kept twice: as times, and as
# milliseconds since 1970 for the clipped sums of the reports (the same arithmetic on both backends). ``zone`` is
# where the device stood when it played (no foreign key: reports outlive zone changes).
as_played = Table(
    "as_played", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("device_id", String(16), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("zone", String(CODE_LEN), nullable=True),
    Column("bid", BigInteger(), nullable=True),
    Column("src", String(8), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("title", String(NAME_LEN), nullable=False, server_default=""),
    Column("content_id", String(64), nullable=True),
    Column("alert_id", Integer(), nullable=True),
    Column("cls", Integer(), nullable=True),
    Column("lvl", Integer(), nullable=True),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("started_ms", BigInteger(), nullable=False),
    Column("ended_ms", BigInteger(), nullable=True),
    Column("end_reason", String(16), nullable=True),
    Column("interrupted_by", String(NAME_LEN), nullable=True),
    Column("interrupted_by_bid", BigInteger(), nullable=True),
    CheckConstraint(_in("src", PLAYED_SOURCES), name="src"),
    CheckConstraint("ended_ms IS NULL OR ended_ms >= started_ms", name="ends_after_start"),
    Index(None, "device_id", "started_ms"),
    Index(None, "zone", "started_ms"),
    Index(None, "started_ms"),
)

# -- library, approval, schedule and scheduler firings (migration 0002) -----------------------------------------

ITEM_KINDS = ("audio", "text", "image", "playlist")
ITEM_STATES = ("draft", "submitted", "approved", "rejected")
POLICIES = ("resume", "drop")
FIRING_STATES = ("claimed", "started", "failed", "missed", "blocked")

# Stored content, one row per file ``DATA_DIR/content/<sha256><suffix>`` (Ogg Opus, PNG, JPEG or UTF-8 text);
# shared by every item that holds the same bytes. Loudness and gain in hundredths (LUFS, dB): no floats stored.
library_content = Table(
    "library_content", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("media_type", String(32), nullable=False),
    Column("size_bytes", BigInteger(), nullable=False),
    Column("duration_ms", Integer(), nullable=True),
    Column("loudness_centi_lufs", Integer(), nullable=True),
    Column("gain_centi_db", Integer(), nullable=True),
    Column("width", Integer(), nullable=True),
    Column("height", Integer(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    CheckConstraint("size_bytes >= 0", name="size_not_negative"),
)

# Library items: audio, e-board text and images, playlists; each with its approval state. Ids are never reused.
library_items = Table(
    "library_items", metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("title", String(NAME_LEN), nullable=False),
    Column("cls", Integer(), nullable=False),
    Column("lvl", Integer(), nullable=False),
    Column("zone", String(CODE_LEN), ForeignKey("zones.code", ondelete="RESTRICT"), nullable=True, index=True),
    Column("author", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("content", String(64), ForeignKey("library_content.sha256", ondelete="RESTRICT"), nullable=True),
    Column("text", Text(), nullable=True),
    Column("original_name", String(255), nullable=False, server_default=""),
    Column("reviewed_by", String(100), nullable=True),
    Column("reviewed_at", UtcDateTime(), nullable=True),
    Column("reason", Text(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint(_in("kind", ITEM_KINDS), name="kind"),
    CheckConstraint(_in("state", ITEM_STATES), name="state"),
    CheckConstraint("cls >= 0 AND cls <= 2", name="cls"),
    CheckConstraint("lvl >= 0 AND lvl <= 3", name="lvl"),
    CheckConstraint("title <> ''", name="title_not_empty"),
    Index(None, "state"),
    sqlite_autoincrement=True,
)

# The members of a playlist item, in order.
playlist_members = Table(
    "playlist_members", metadata,
    Column("playlist_id", Integer(), ForeignKey("library_items.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer(), primary_key=True, autoincrement=False),
    Column("item_id", Integer(), ForeignKey("library_items.id", ondelete="RESTRICT"), nullable=False, index=True),
    CheckConstraint("position >= 0", name="position_not_negative"),
)

# Schedule entries: one-off (rrule NULL) or recurring (RFC 5545 RRULE) from ``start_local``, a wall-clock time
# (YYYY-MM-DDTHH:MM:SS) in the IANA zone ``tz``. ``active_from``: occurrences before it are never fired (set when
# the entry is created or its timing changes). Ids are never reused (firings refer to them).
schedule_entries = Table(
    "schedule_entries", metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("title", String(NAME_LEN), nullable=False),
    Column("item_id", Integer(), ForeignKey("library_items.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("start_local", String(19), nullable=False),
    Column("tz", String(64), nullable=False),
    Column("rrule", Text(), nullable=True),
    Column("duration_ms", Integer(), nullable=True),
    Column("valid_from", UtcDateTime(), nullable=True),
    Column("valid_until", UtcDateTime(), nullable=True),
    Column("cls", Integer(), nullable=False),
    Column("lvl", Integer(), nullable=False),
    Column("policy", String(8), nullable=False),
    Column("enabled", Boolean(), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("active_from", UtcDateTime(), nullable=False),
    Column("version", Integer(), nullable=False),
    CheckConstraint(_in("policy", POLICIES), name="policy"),
    CheckConstraint("cls >= 0 AND cls <= 2", name="cls"),
    CheckConstraint("lvl >= 0 AND lvl <= 3", name="lvl"),
    CheckConstraint("duration_ms IS NULL OR duration_ms > 0", name="duration_positive"),
    CheckConstraint("title <> ''", name="title_not_empty"),
    sqlite_autoincrement=True,
)

schedule_targets = Table(
    "schedule_targets", metadata,
    Column("entry_id", Integer(), ForeignKey("schedule_entries.id", ondelete="CASCADE"), primary_key=True),
    Column("zone", String(CODE_LEN), ForeignKey("zones.code", ondelete="RESTRICT"), primary_key=True, index=True),
)

# One row per (entry, occurrence): the unique index is what makes a slot fire at most once, whatever crashes or
# restarts. No foreign key: the record outlives its entry.
schedule_firings = Table(
    "schedule_firings", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("entry_id", Integer(), nullable=False),
    Column("occurrence_at", UtcDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("item_id", Integer(), nullable=True),
    Column("broadcast_ids", JSON(), nullable=True),
    Column("detail", String(500), nullable=True),
    Column("claimed_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    CheckConstraint(_in("status", FIRING_STATES), name="status"),
    Index(None, "entry_id", "occurrence_at", unique=True),
    Index(None, "status"),
    Index(None, "occurrence_at"),
)

__all__ += ["FIRING_STATES", "ITEM_KINDS", "ITEM_STATES", "POLICIES", "library_content", "library_items",
            "playlist_members", "schedule_entries", "schedule_firings", "schedule_targets"]
