"""Login rate limiting, sans-I/O: failures per key (username, source address) and exponential lockout.

A key that fails ``failures`` times within ``window_s`` is locked for ``lockout_s``; while it
keeps failing each further failure after a lockout doubles the lockout, up to ``max_lockout_s``. A key that has
not failed for ``forget_s`` (and is not locked) is forgotten; a success forgets it at once. While a key is
locked, logins are refused before the password is checked, so a locked key gives away nothing.

The table is bounded (``max_keys``, least recently used evicted first) and thread-safe. It is per process:
several API nodes each keep their own. Times are monotonic seconds passed in by the caller.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["LimitPolicy", "LoginLimiter"]


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    failures: int = 5
    window_s: float = 60.0
    lockout_s: float = 30.0
    max_lockout_s: float = 900.0
    forget_s: float = 3600.0


@dataclass(slots=True)
class _State:
    recent: deque[float] = field(default_factory=deque)
    strikes: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginLimiter:
    """Tracks failures for keys of several kinds (``"user"``, ``"addr"``), each kind with its own policy."""

    def __init__(self, policies: dict[str, LimitPolicy] | None = None, *, max_keys: int = 100_000) -> None:
        self._policies = policies or {"user": LimitPolicy(), "addr": LimitPolicy(failures=20)}
        self._max_keys = max_keys
        self._states: OrderedDict[tuple[str, str], _State] = OrderedDict()
        self._lock = threading.Lock()

    def _policy(self, kind: str) -> LimitPolicy:
        return self._policies[kind]

    def _state(self, key: tuple[str, str], now: float, *, create: bool) -> _State | None:
        state = self._states.get(key)
        if state is not None:
            policy = self._policy(key[0])
            if now >= state.locked_until and now - state.last_failure >= policy.forget_s:
                del self._states[key]
                state = None
            else:
                self._states.move_to_end(key)
        if state is None and create:
            state = self._states[key] = _State()
            while len(self._states) > self._max_keys:
                self._states.popitem(last=False)
        return state

    def retry_after(self, keys: Iterable[tuple[str, str]], now: float) -> float:
        """Seconds until every one of ``keys`` may try again (0: they may try now)."""
        with self._lock:
            wait = 0.0
            for key in keys:
                state = self._state(key, now, create=False)
                if state is not None:
                    wait = max(wait, state.locked_until - now)
            return max(0.0, wait)

    def failure(self, keys: Iterable[tuple[str, str]], now: float) -> float:
        """Count one failure against each key; returns the lockout now in force (0: none)."""
        with self._lock:
            wait = 0.0
            for key in keys:
                policy = self._policy(key[0])
                state = self._state(key, now, create=True)
                assert state is not None
                state.last_failure = now
                while state.recent and now - state.recent[0] >= policy.window_s:
                    state.recent.popleft()
                state.recent.append(now)
                if state.strikes or len(state.recent) >= policy.failures:
                    lockout = min(policy.lockout_s * 2 ** state.strikes, policy.max_lockout_s)
                    state.strikes += 1
                    state.locked_until = now + lockout
                    state.recent.clear()
                wait = max(wait, state.locked_until - now)
            return max(0.0, wait)

    def success(self, key: tuple[str, str]) -> None:
        """Forget ``key`` (a correct password for this username)."""
        with self._lock:
            self._states.pop(key, None)

    def __len__(self) -> int:
        return len(self._states)
