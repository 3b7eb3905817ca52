"""Settings of the control plane, and the :class:`ControlPlane` context that routes and commands share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from loa.control_plane.alerts import AlertDispatcher
from loa.control_plane.auth import Passwords
from loa.control_plane.authority import KEY_FILE, load_authority
from loa.control_plane.broadcasts import LiveBroadcaster
from loa.control_plane.db import Database, default_url, utc_now
from loa.control_plane.events import EventBus
from loa.control_plane.ratelimit import LimitPolicy, LoginLimiter

__all__ = ["ControlPlane", "Settings"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """``data_dir`` holds the embedded database (unless ``database_url`` names another) and, later, content."""

    data_dir: Path
    database_url: str | None = None
    session_ttl: timedelta = timedelta(hours=12)
    login_user_policy: LimitPolicy = field(default_factory=LimitPolicy)
    login_address_policy: LimitPolicy = field(default_factory=lambda: LimitPolicy(failures=20))
    sse_ping_s: float = 15.0
    # Library uploads (audio and images) larger than this are refused with 413.
    library_max_upload_bytes: int = 200 * 1024 * 1024
    # Alerts: the two-person rule (a second NOC operator or admin confirms each trigger), and the authority's
    # signing key file (default DATA_DIR/authority.key, created on first start).
    alerts_two_person: bool = True
    authority_key_file: Path | None = None
    # Argon2id cost (RFC 9106 second recommended option by default); tests lower it.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65_536
    argon2_parallelism: int = 4
    clock: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic

    def url(self) -> str:
        return self.database_url or default_url(self.data_dir)

    def authority_key_path(self) -> Path:
        return self.authority_key_file or self.data_dir / KEY_FILE


class ControlPlane:
    """The control plane's shared state: database, event bus, password hasher, login limiter, the alert
    authority, and the broadcaster alerts are dispatched to (None until one is attached)."""

    def __init__(self, settings: Settings, *, database: Database | None = None) -> None:
        self.settings = settings
        self.authority = load_authority(settings.authority_key_path())
        self.alert_dispatcher: AlertDispatcher | None = None
        self.live: LiveBroadcaster | None = None  # the streamer's live broadcasts, when one runs here
        self.bus = EventBus()
        self.db = database or Database.open(settings.url(), clock=settings.clock)
        self.db.publish = self.bus.publish
        self.passwords = Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                                   parallelism=settings.argon2_parallelism)
        self.limiter = LoginLimiter({"user": settings.login_user_policy, "addr": settings.login_address_policy})

    def close(self) -> None:
        self.db.close()
