"""Roles and permissions, scope, password hashing, tokens, and the login rate limiter (sans-I/O)."""

from __future__ import annotations

import pytest

from loa.control_plane.auth import ACTIONS, PERMISSIONS, ROLES, Passwords, Principal, can, new_token, token_digest
from loa.control_plane.ratelimit import LimitPolicy, LoginLimiter


def test_the_permission_table() -> None:
    """The table as a literal: a change to who may do what must change this test too."""
    read = {"zones.read", "devices.read", "events.read", "library.read", "schedule.read"}
    watch = {"alerts.read", "reports.read", "broadcasts.read"}
    assert {role: set(actions) for role, actions in PERMISSIONS.items()} == {
        "admin": set(ACTIONS),
        "noc": read | watch | {"devices.enrol", "devices.manage", "library.write", "library.approve",
                               "schedule.write", "alerts.write", "alerts.trigger", "authority.read",
                               "broadcasts.live"},
        "editor": read | watch | {"library.write"},
        "approver": read | watch | {"library.approve"},
        "scheduler": read | watch | {"schedule.write", "broadcasts.live"},
        "viewer": read | watch,
        "vendor": {"zones.read", "devices.read", "events.read", "devices.enrol"},
    }
    assert set(ROLES) == set(PERMISSIONS)
    assert {"zones.read", "zones.write", "devices.read", "devices.enrol", "devices.manage",
            "users.read", "users.write", "audit.read", "events.read",
            "library.read", "library.write", "library.approve", "schedule.read", "schedule.write",
            "alerts.read", "alerts.write", "alerts.trigger", "authority.read", "reports.read",
            "broadcasts.read", "broadcasts.live"} == ACTIONS


def test_can() -> None:
    viewer = Principal(1, "v", "viewer", "48", 1, "api")
    assert can(viewer, "devices.read")
    assert not can(viewer, "devices.manage")
    assert not can(Principal(1, "x", "unknown-role", None, 1, "api"), "zones.read")


def test_argon2id_passwords() -> None:
    passwords = Passwords.fast()
    digest = passwords.hash("mật khẩu rất dài")
    assert digest.startswith("$argon2id$")
    assert passwords.verify(digest, "mật khẩu rất dài")
    assert not passwords.verify(digest, "mat khau rat dai")
    assert not passwords.verify(None, "anything")
    assert not passwords.verify("not a hash", "anything")
    stronger = Passwords(time_cost=2, memory_kib=512, parallelism=1)
    assert stronger.needs_rehash(digest)
    assert len(Passwords.generate()) >= 16


def test_default_cost_is_rfc_9106() -> None:
    digest = Passwords().hash("x" * 12)
    assert "$m=65536,t=3,p=4$" in digest


def test_tokens_are_random_and_stored_hashed() -> None:
    a, b = new_token(), new_token()
    assert a != b
    assert a.startswith("loa_")
    assert len(a) >= 40
    assert len(token_digest(a)) == 32


USER, ADDR = ("user", "lan"), ("addr", "203.0.113.5")


def test_five_failures_a_minute_then_exponential_lockout() -> None:
    limiter = LoginLimiter({"user": LimitPolicy(), "addr": LimitPolicy(failures=20)})
    t = 0.0
    for i in range(4):
        assert limiter.failure([USER, ADDR], t + i) == 0
    assert limiter.retry_after([USER], t + 4) == 0
    assert limiter.failure([USER, ADDR], t + 4) == 30
    assert limiter.retry_after([USER, ADDR], t + 10) == pytest.approx(24)
    t = 40.0
    assert limiter.retry_after([USER], t) == 0
    assert limiter.failure([USER], t) == 60     # each failure after a lockout doubles it
    t += 61
    assert limiter.failure([USER], t) == 120
    for _ in range(10):
        t += 1000
        limiter.failure([USER], t)
    assert limiter.retry_after([USER], t) == 900  # capped
    limiter.success(USER)
    assert limiter.retry_after([USER], t) == 0


def test_failures_spread_out_do_not_lock() -> None:
    limiter = LoginLimiter()
    for i in range(20):
        assert limiter.failure([USER], i * 15.0) == 0  # 4 per minute


def test_the_address_key_has_its_own_threshold() -> None:
    limiter = LoginLimiter({"user": LimitPolicy(), "addr": LimitPolicy(failures=20)})
    for i in range(19):
        assert limiter.failure([("user", f"u{i}"), ADDR], float(i) / 10) == 0
    assert limiter.failure([("user", "u19"), ADDR], 2.0) == 30
    assert limiter.retry_after([("user", "someone-else"), ADDR], 3.0) == 29


def test_quiet_keys_are_forgotten_and_the_table_is_bounded() -> None:
    limiter = LoginLimiter({"user": LimitPolicy(forget_s=100), "addr": LimitPolicy()}, max_keys=50)
    limiter.failure([USER], 0.0)
    assert len(limiter) == 1
    assert limiter.retry_after([USER], 200.0) == 0
    limiter.failure([USER], 200.0)
    for i in range(200):
        limiter.failure([("user", f"spray{i}")], 201.0)
    assert len(limiter) == 50
