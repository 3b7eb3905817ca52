"""The device (Noise initiator) side of a session, sans-I/O. Public through :mod:`loa.protocol.session`."""

from __future__ import annotations

import enum
import os
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from loa.protocol._session_core import (
    DEAD_AFTER,
    JOIN_JITTER,
    JOIN_RETRY,
    KEEPALIVE_INTERVAL,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_JITTER,
    REKEY_TIMEOUT,
    RETRY_MAX,
    RETRY_ROUND_TRIPS,
    Dropped,
    Event,
    Keepalive,
    Message,
    SessionKeys,
    SessionLost,
    SessionStarted,
    build_init,
    open_response,
    open_transport,
    seal_transport,
)
from loa.protocol.cookie import COOKIE_LIFETIME, mac1_key, open_cookie_reply
from loa.protocol.datagram import MAX_PLAINTEXT, CookieReply, HandshakeResponse, Transport, parse
from loa.protocol.errors import (
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    UnknownKeyError,
    UnknownTypeError,
)
from loa.protocol.noise import HandshakeState, x25519_public

__all__ = ["DEVICE_TRANSITIONS", "DeviceInput", "DeviceSession", "DeviceState", "DeviceStatistics"]


class DeviceState(enum.Enum):
    IDLE = "idle"  # not connecting; no keys
    HANDSHAKING = "handshaking"  # an init is pending; no session to send on
    ESTABLISHED = "established"  # a current session; no init pending
    REKEYING = "rekeying"  # a current session and a pending init


class DeviceInput(enum.Enum):
    CONNECT = "connect"
    CLOSE = "close"
    SEND = "send"
    RESPONSE_ACCEPTED = "response accepted"
    COOKIE_ACCEPTED = "cookie accepted"
    TRANSPORT_ACCEPTED = "transport accepted"
    RETRY_TIMER = "retry timer"
    KEEPALIVE_TIMER = "keepalive timer"
    REKEY_TIMER = "rekey timer"
    DEAD_TIMER = "dead timer"
    CURRENT_EXPIRED = "current expired"
    PREVIOUS_EXPIRED = "previous expired"


_S, _I = DeviceState, DeviceInput

#: Every legal (state, input) pair and the state it leads to. A local call absent from the table raises
#: LocalProtocolError; a datagram whose input is absent is dropped and counted (UnknownKeyError).
DEVICE_TRANSITIONS: Final[Mapping[DeviceState, Mapping[DeviceInput, DeviceState]]] = {
    _S.IDLE: {_I.CONNECT: _S.HANDSHAKING, _I.CLOSE: _S.IDLE},
    _S.HANDSHAKING: {
        _I.RETRY_TIMER: _S.HANDSHAKING,
        _I.COOKIE_ACCEPTED: _S.HANDSHAKING,
        _I.RESPONSE_ACCEPTED: _S.ESTABLISHED,
        _I.CLOSE: _S.IDLE,
    },
    _S.ESTABLISHED: {
        _I.SEND: _S.ESTABLISHED,
        _I.TRANSPORT_ACCEPTED: _S.ESTABLISHED,
        _I.KEEPALIVE_TIMER: _S.ESTABLISHED,
        _I.PREVIOUS_EXPIRED: _S.ESTABLISHED,
        _I.REKEY_TIMER: _S.REKEYING,
        _I.DEAD_TIMER: _S.HANDSHAKING,
        _I.CURRENT_EXPIRED: _S.HANDSHAKING,
        _I.CLOSE: _S.IDLE,
    },
    _S.REKEYING: {
        _I.SEND: _S.REKEYING,
        _I.TRANSPORT_ACCEPTED: _S.REKEYING,
        _I.KEEPALIVE_TIMER: _S.REKEYING,
        _I.PREVIOUS_EXPIRED: _S.REKEYING,
        _I.RETRY_TIMER: _S.REKEYING,
        _I.COOKIE_ACCEPTED: _S.REKEYING,
        _I.RESPONSE_ACCEPTED: _S.ESTABLISHED,
        _I.DEAD_TIMER: _S.HANDSHAKING,
        _I.CURRENT_EXPIRED: _S.HANDSHAKING,
        _I.CLOSE: _S.IDLE,
    },
}

#: Order in which due timers fire within one handle_timeout call.
_TIMERS: Final = (
    _I.PREVIOUS_EXPIRED, _I.CURRENT_EXPIRED, _I.DEAD_TIMER, _I.REKEY_TIMER, _I.RETRY_TIMER, _I.KEEPALIVE_TIMER,
)


@dataclass(frozen=True, slots=True)
class DeviceStatistics:
    """A snapshot: drops by error name, inits sent, cookies accepted, sessions started."""

    drops: Mapping[str, int]
    inits_sent: int
    cookies_accepted: int
    sessions_started: int


#: Inits replaced by a retry whose response still teaches the round trip: RETRY_MAX's worth at the joining pace.
REPLACED_KEPT: Final = 4


def _unix_nanoseconds(now: float) -> int:
    seconds = int(now)
    return seconds * 1_000_000_000 + round((now - seconds) * 1e9)


@dataclass(slots=True)
class _Pending:
    """The init awaiting an answer. ``cookie``: it carries a mac2; ``may_resend``: a CookieReply for it may still
    bring one prompt resend (true for an init a timer or ``connect`` sent, false for that resend)."""

    sender_index: int
    handshake: HandshakeState
    mac1: bytes
    sent_at: float
    cookie: bool
    may_resend: bool
    retry_at: float


class DeviceSession:
    """The device side of a loa session (PROTOCOL.md section 3), driven by :data:`DEVICE_TRANSITIONS`.

    ``now`` is seconds on the caller's clock. ``random_bytes`` supplies ephemeral keys, indexes, the boot value
    and retry jitter. ``timestamp_source(now)`` proposes the handshake timestamp; the session uses
    ``max(proposal, last + 1)``. The default proposes ``now`` in nanoseconds, right when ``now`` is Unix time; a
    device without a real-time clock must inject a persisted counter.

    An unanswered init is retried after ``JOIN_RETRY`` + 0-500 ms while the device has no current session and
    the init carries no cookie, else after ``REKEY_TIMEOUT`` + 0-333 ms (PROTOCOL.md 3.8.2); a CookieReply for an
    init that a timer or :meth:`connect` sent brings one prompt resend with ``mac2`` (3.4.1). Once the device
    knows its handshake round trip (``handshake_rtt``: the latest of a completed handshake, or of an authentic
    response to the init a retry replaced, which is dropped all the same), the base is at least
    ``RETRY_ROUND_TRIPS`` of it, at most ``RETRY_MAX``: on a path slower than the retry, each response would
    otherwise answer an init no longer pending.

    Datagrams go to the one server address the caller knows; :meth:`datagrams_to_send` drains them.
    """

    def __init__(
        self,
        *,
        static_private: bytes,
        server_public: bytes,
        boot: int | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        timestamp_source: Callable[[float], int] | None = None,
    ) -> None:
        self.public_key = x25519_public(static_private)
        if len(server_public) != 32:
            raise LocalProtocolError("server_public must be 32 bytes")
        self.server_public = server_public
        self._static = static_private
        self._random_bytes = random_bytes
        self.boot = int.from_bytes(random_bytes(4), "big") if boot is None else boot
        self._timestamp_source = timestamp_source or _unix_nanoseconds
        self._last_timestamp = -1
        self._server_mac1 = mac1_key(server_public)
        self._own_mac1 = mac1_key(self.public_key)
        self._state = DeviceState.IDLE
        self._pending: _Pending | None = None
        # the inits the pending one's retries replaced, latest last: a late response to one still gives the round trip
        self._replaced: deque[_Pending] = deque(maxlen=REPLACED_KEPT)
        self.handshake_rtt: float | None = None
        # sessions ended by this side's timers: the server silent for DEAD_AFTER, or REJECT_AFTER_TIME reached
        # (a rekey never answered)
        self.ended_dead = 0
        self.ended_expired = 0
        self._cookie: tuple[bytes, float] | None = None
        self._current: SessionKeys | None = None
        self._previous: SessionKeys | None = None
        self._last_sent = 0.0
        self._last_received = 0.0
        self._confirm_at: float | None = None
        self._server_boot: int | None = None
        self._out: list[bytes] = []
        self._drops: Counter[str] = Counter()
        self._inits = self._cookies = self._started = 0

    @property
    def state(self) -> DeviceState:
        return self._state

    def _step(self, event: DeviceInput) -> None:
        try:
            self._state = DEVICE_TRANSITIONS[self._state][event]
        except KeyError:
            raise LocalProtocolError(f"{event.value} is not allowed in state {self._state.value}") from None

    def _allowed(self, event: DeviceInput) -> bool:
        return event in DEVICE_TRANSITIONS[self._state]

    # -- local calls -------------------------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start handshaking (LocalProtocolError unless IDLE). The init is queued at once."""
        self._step(DeviceInput.CONNECT)
        self._start_handshake(now)

    def close(self) -> None:
        """Forget every session and the pending init; back to IDLE. Queued datagrams stay queued."""
        self._step(DeviceInput.CLOSE)
        self._pending = self._current = self._previous = None
        self._replaced.clear()
        self._confirm_at = None

    def send(self, plaintext: bytes, now: float) -> None:
        """Queue ``plaintext`` (empty = keepalive) on the current session.

        LocalProtocolError, with nothing queued, when there is no current session, it is REJECT_AFTER_TIME old
        (call :meth:`handle_timeout`), or ``plaintext`` exceeds 1168 bytes.
        """
        if not self._allowed(DeviceInput.SEND) or self._current is None:
            raise LocalProtocolError(f"no session to send on (state {self._state.value})")
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT}")
        if self._current.expired(now):
            raise LocalProtocolError("the session expired; call handle_timeout")
        self._seal(bytes(plaintext), now)
        self._step(DeviceInput.SEND)

    def datagrams_to_send(self) -> list[bytes]:
        """Drain the queued datagrams, oldest first. A session confirmation keepalive is added here when nothing
        was sent on a freshly completed session since its response arrived."""
        if self._confirm_at is not None and self._current is not None:
            self._seal(b"", self._confirm_at)
        out, self._out = self._out, []
        return out

    # -- datagrams ---------------------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> list[Event]:
        """Process one datagram from the server. Never raises for any input bytes: a bad datagram yields
        ``[Dropped(name)]``, is counted, and changes nothing."""
        try:
            message = parse(data)
            if isinstance(message, Transport):
                return self._on_transport(message, now)
            if isinstance(message, HandshakeResponse):
                return self._on_response(message, now)
            if isinstance(message, CookieReply):
                self._on_cookie(message, now)
                return []
            raise UnknownTypeError("a device does not accept HandshakeInit")
        except RemoteProtocolError as exc:
            name = type(exc).__name__
            self._drops[name] += 1
            return [Dropped(name)]

    def _on_response(self, message: HandshakeResponse, now: float) -> list[Event]:
        pending = self._pending
        if pending is None or message.receiver_index != pending.sender_index:
            self._learn_from_late(message, now)
            raise UnknownKeyError("response to no pending init")
        boot, keys = open_response(message, pending.handshake, device_mac1_key=self._own_mac1, now=now)
        self._step(DeviceInput.RESPONSE_ACCEPTED)
        self._pending = None
        self._replaced.clear()
        self.handshake_rtt = now - pending.sent_at
        self._previous, self._current = self._current, keys
        self._last_received = self._last_sent = now
        self._confirm_at = now
        restarted = self._server_boot is not None and boot != self._server_boot
        self._server_boot = boot
        self._started += 1
        return [SessionStarted(None, boot, restarted)]

    def _learn_from_late(self, message: HandshakeResponse, now: float) -> None:
        """A response to an init that a retry replaced: the server had answered, later than the retry. Once it
        authenticates (else the error of its check is raised), its round trip sets the pending init's retry and
        those after it; the response itself is dropped (the server has since taken a newer init)."""
        pending = self._pending
        replaced = next((r for r in self._replaced if r.sender_index == message.receiver_index), None)
        if replaced is None or pending is None:
            return
        open_response(message, replaced.handshake, device_mac1_key=self._own_mac1, now=now)
        self._replaced.remove(replaced)
        self.handshake_rtt = now - replaced.sent_at
        pending.retry_at = max(pending.retry_at, pending.sent_at + self._retry_delay(pending.cookie))

    def _on_cookie(self, message: CookieReply, now: float) -> None:
        pending = self._pending
        if pending is None or message.receiver_index != pending.sender_index:
            raise UnknownKeyError("cookie reply for no pending init")
        cookie = open_cookie_reply(message, pending.mac1, self.server_public)
        self._step(DeviceInput.COOKIE_ACCEPTED)
        self._cookie = (cookie, now)
        self._cookies += 1
        if pending.may_resend:  # at once, with mac2; the resend itself brings no further one (PROTOCOL.md 3.4.1)
            self._start_handshake(now, may_resend=False)

    def _on_transport(self, message: Transport, now: float) -> list[Event]:
        keys = next((k for k in (self._current, self._previous) if k and k.local_index == message.receiver_index),
                    None)
        if keys is None:
            raise UnknownKeyError("transport for no session")
        if keys.expired(now):
            raise ExpiredError("transport on an expired session")
        plaintext, _ = open_transport(keys, message)
        self._step(DeviceInput.TRANSPORT_ACCEPTED)
        self._last_received = now
        return [Message(None, plaintext) if plaintext else Keepalive(None)]

    # -- timers ------------------------------------------------------------------------------------------------

    def _deadlines(self) -> dict[DeviceInput, float]:
        out: dict[DeviceInput, float] = {}
        if self._previous is not None:
            out[DeviceInput.PREVIOUS_EXPIRED] = self._previous.created + REJECT_AFTER_TIME
        if self._current is not None:
            out[DeviceInput.CURRENT_EXPIRED] = self._current.created + REJECT_AFTER_TIME
            out[DeviceInput.DEAD_TIMER] = self._last_received + DEAD_AFTER
            if self._state is DeviceState.ESTABLISHED:
                out[DeviceInput.REKEY_TIMER] = self._current.created + REKEY_AFTER_TIME
            out[DeviceInput.KEEPALIVE_TIMER] = self._keepalive_deadline(self._current)
        if self._pending is not None:
            out[DeviceInput.RETRY_TIMER] = self._pending.retry_at
        return out

    def _keepalive_deadline(self, current: SessionKeys) -> float:
        """KEEPALIVE_INTERVAL after the last send; REKEY_TIMEOUT after it while the current session has not
        received yet or the server has been silent for KEEPALIVE_INTERVAL (probing)."""
        sent, heard = self._last_sent, self._last_received
        if not current.received:
            return sent + REKEY_TIMEOUT
        return min(sent + KEEPALIVE_INTERVAL, max(sent + REKEY_TIMEOUT, heard + KEEPALIVE_INTERVAL))

    def next_timeout(self) -> float | None:
        """The earliest time at which :meth:`handle_timeout` has work, or None."""
        return min(self._deadlines().values(), default=None)

    def handle_timeout(self, now: float) -> list[Event]:
        """Fire every timer due at ``now`` (in the order expiry, dead, rekey, retry, keepalive)."""
        events: list[Event] = []
        for timer in _TIMERS:
            deadline = self._deadlines().get(timer)
            if deadline is None or now < deadline:
                continue
            if timer is DeviceInput.PREVIOUS_EXPIRED:
                self._previous = None
            elif timer in (DeviceInput.CURRENT_EXPIRED, DeviceInput.DEAD_TIMER):
                if timer is DeviceInput.DEAD_TIMER:
                    self.ended_dead += 1
                else:
                    self.ended_expired += 1
                self._current = self._previous = None
                self._confirm_at = None
                events.append(SessionLost(None))
                if self._pending is None:
                    self._start_handshake(now)
                else:  # a rekey's init: now retried at the joining pace
                    pending = self._pending
                    pending.retry_at = min(pending.retry_at, pending.sent_at + self._retry_delay(pending.cookie))
            elif timer in (DeviceInput.REKEY_TIMER, DeviceInput.RETRY_TIMER):
                self._start_handshake(now)
            else:
                self._seal(b"", now)
            self._step(timer)
        return events

    # -- helpers -----------------------------------------------------------------------------------------------

    def _seal(self, plaintext: bytes, now: float) -> None:
        assert self._current is not None
        self._out.append(seal_transport(self._current, plaintext).to_bytes())
        self._last_sent = now
        self._confirm_at = None

    def _retry_delay(self, cookie: bool) -> float:
        """Seconds from sending an init to its retry: ``REKEY_TIMEOUT`` + 0-333 ms while a current session exists
        or the init carries a cookie's mac2 (the server was under load), else ``JOIN_RETRY`` + 0-500 ms; the
        jitter in whole milliseconds, uniform but for the 2-byte draw's modulo bias (under 1 %)."""
        if self._current is not None or cookie:
            base, jitter = REKEY_TIMEOUT, REKEY_JITTER
        else:
            base, jitter = JOIN_RETRY, JOIN_JITTER
        if self.handshake_rtt is not None:
            base = max(base, min(RETRY_MAX, RETRY_ROUND_TRIPS * self.handshake_rtt))
        return base + int.from_bytes(self._random_bytes(2), "big") % (round(jitter * 1000) + 1) / 1000

    def _start_handshake(self, now: float, *, may_resend: bool = True) -> None:
        taken = {k.local_index for k in (self._current, self._previous) if k is not None}
        index = int.from_bytes(self._random_bytes(4), "big")
        while index in taken:
            index = int.from_bytes(self._random_bytes(4), "big")
        self._last_timestamp = max(self._timestamp_source(now), self._last_timestamp + 1)
        cookie = self._cookie[0] if self._cookie and now - self._cookie[1] < COOKIE_LIFETIME else None
        init, handshake = build_init(
            device_static=self._static,
            server_pub=self.server_public,
            ephemeral=self._random_bytes(32),
            sender_index=index,
            timestamp=self._last_timestamp,
            boot=self.boot,
            cookie=cookie,
            server_mac1_key=self._server_mac1,
        )
        retry_at = now + self._retry_delay(cookie is not None)
        if self._pending is not None:
            self._replaced.append(self._pending)
        self._pending = _Pending(index, handshake, init.mac1, now, cookie is not None, may_resend, retry_at)
        self._out.append(init.to_bytes())
        self._inits += 1

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(MappingProxyType(dict(self._drops)), self._inits, self._cookies, self._started)
