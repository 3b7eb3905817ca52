"""Settings of the control plane, and the :class:`ControlPlane` context that routes and commands share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from loa.control_plane.auth import Passwords
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
    # Argon2id cost (RFC 9106 second recommended option by default); tests lower it.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65_536
    argon2_parallelism: int = 4
    clock: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic

    def url(self) -> str:
        return self.database_url or default_url(self.data_dir)


class ControlPlane:
    """The control plane's shared state: database, event bus, password hasher, login limiter."""

    def __init__(self, settings: Settings, *, database: Database | None = None) -> None:
        self.settings = settings
        self.bus = EventBus()
        self.db = database or Database.open(settings.url(), clock=settings.clock)
        self.db.publish = self.bus.publish
        self.passwords = Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                                   parallelism=settings.argon2_parallelism)
        self.limiter = LoginLimiter({"user": settings.login_user_policy, "addr": settings.login_address_policy})

    def close(self) -> None:
        self.db.close()
