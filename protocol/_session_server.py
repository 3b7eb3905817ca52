"""The server (Noise responder) side of sessions, sans-I/O. Public through :mod:`loa.protocol.session`."""

from __future__ import annotations

import enum
import heapq
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from loa.protocol._session_core import (
    HANDSHAKES_PER_SECOND_BEFORE_COOKIE,
    KEEPALIVE_INTERVAL,
    REJECT_AFTER_TIME,
    Dropped,
    Event,
    Keepalive,
    Message,
    SessionKeys,
    SessionLost,
    SessionStarted,
    build_response,
    check_timestamp,
    device_id,
    open_init,
    open_transport,
    seal_transport_bytes,
)
from loa.protocol.cookie import Address, CookieSealer, CookieSecret, MacKey, address_bytes, mac1_key
from loa.protocol.datagram import MAX_PLAINTEXT, HandshakeInit, Transport, is_init, parse, transport_index
from loa.protocol.errors import (
    BadMacError,
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    UnknownKeyError,
    UnknownTypeError,
)
from loa.protocol.noise import x25519_public

__all__ = ["SERVER_TRANSITIONS", "PeerState", "ServerEndpoint", "ServerInput", "ServerStatistics"]


class PeerState(enum.Enum):
    """The server's view of one device."""

    NONE = "none"  # no sessions (the record does not exist)
    RESPONDED = "responded"  # a response was sent; nothing confirmed to send on
    ESTABLISHED = "established"  # a confirmed current session
    REKEYING = "rekeying"  # a confirmed current session and an unconfirmed next one


class ServerInput(enum.Enum):
    INIT_ACCEPTED = "init accepted"
    CONFIRMED = "confirmed"  # the first authenticated transport on the next session
    TRANSPORT_ACCEPTED = "transport accepted"
    SEND = "send"
    CURRENT_EXPIRED = "current expired"
    NEXT_EXPIRED = "next expired"
    PREVIOUS_EXPIRED = "previous expired"
    FORGET = "forget"


_S, _I = PeerState, ServerInput

#: Every legal (state, input) pair per device. A local call absent from the table raises LocalProtocolError.
SERVER_TRANSITIONS: Final[Mapping[PeerState, Mapping[ServerInput, PeerState]]] = {
    _S.NONE: {_I.INIT_ACCEPTED: _S.RESPONDED, _I.FORGET: _S.NONE},
    _S.RESPONDED: {
        _I.INIT_ACCEPTED: _S.RESPONDED,
        _I.CONFIRMED: _S.ESTABLISHED,
        _I.NEXT_EXPIRED: _S.NONE,
        _I.FORGET: _S.NONE,
    },
    _S.ESTABLISHED: {
        _I.INIT_ACCEPTED: _S.REKEYING,
        _I.TRANSPORT_ACCEPTED: _S.ESTABLISHED,
        _I.SEND: _S.ESTABLISHED,
        _I.PREVIOUS_EXPIRED: _S.ESTABLISHED,
        _I.CURRENT_EXPIRED: _S.NONE,
        _I.FORGET: _S.NONE,
    },
    _S.REKEYING: {
        _I.INIT_ACCEPTED: _S.REKEYING,
        _I.CONFIRMED: _S.ESTABLISHED,
        _I.TRANSPORT_ACCEPTED: _S.REKEYING,
        _I.SEND: _S.REKEYING,
        _I.PREVIOUS_EXPIRED: _S.REKEYING,
        _I.NEXT_EXPIRED: _S.ESTABLISHED,
        _I.CURRENT_EXPIRED: _S.RESPONDED,
        _I.FORGET: _S.NONE,
    },
}


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot: drops by error name, inits that passed mac1, responses and cookie replies sent, sessions
    started (confirmed), and devices with a session now."""

    drops: Mapping[str, int]
    inits: int
    responses_sent: int
    cookie_replies_sent: int
    sessions_started: int
    active_devices: int


class _Peer:
    __slots__ = (
        "address", "current", "deadline", "last_sent", "next", "next_boot", "previous", "pub", "state",
    )

    def __init__(self, pub: bytes) -> None:
        self.pub = pub
        self.state = PeerState.NONE
        self.current: SessionKeys | None = None
        self.next: SessionKeys | None = None
        self.previous: SessionKeys | None = None
        self.next_boot = 0
        self.address: Address | None = None
        self.last_sent = 0.0
        self.deadline: float | None = None

    def sessions(self) -> tuple[SessionKeys, ...]:
        return tuple(k for k in (self.current, self.next, self.previous) if k is not None)

    def keys_of(self, index: int) -> SessionKeys | None:
        """The session of this peer whose local index is ``index``."""
        for keys in (self.current, self.next, self.previous):
            if keys is not None and keys.local_index == index:
                return keys
        return None


class ServerEndpoint:
    """The server side of loa sessions with many devices (PROTOCOL.md section 3), per device driven by
    :data:`SERVER_TRANSITIONS`.

    ``is_enrolled(device_pub)`` is the registry. ``handshake_timestamps`` restores the greatest accepted init
    timestamp per device (persist :meth:`handshake_timestamps` to keep replay defence across restarts).
    ``random_bytes`` supplies ephemeral keys, indexes, cookie secrets and nonces, and the boot value.

    The server never sends to an address more bytes than it received from it until a datagram from that address
    authenticated: it answers an init with at most one response (96 bytes) or cookie reply (52 bytes), both
    smaller than the 148-byte init, and sends transport messages only to the address of a confirmed session.
    """

    def __init__(
        self,
        *,
        static_private: bytes,
        is_enrolled: Callable[[bytes], bool],
        boot: int | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        handshake_timestamps: Mapping[bytes, int] | None = None,
        cookie_threshold: int = HANDSHAKES_PER_SECOND_BEFORE_COOKIE,
    ) -> None:
        self._static = static_private
        self.public_key = x25519_public(static_private)
        self._mac1 = MacKey(mac1_key(self.public_key))
        self._sealer = CookieSealer(self.public_key)
        self._is_enrolled = is_enrolled
        self._random_bytes = random_bytes
        self.boot = int.from_bytes(random_bytes(4), "big") if boot is None else boot
        self._timestamps: dict[bytes, int] = dict(handshake_timestamps or {})
        self._boots: dict[bytes, int] = {}
        self._cookies = CookieSecret(random_bytes)
        self._cookie_threshold = cookie_threshold
        self._forced_load: bool | None = None
        self._recent_inits: deque[float] = deque()
        self._peers: dict[bytes, _Peer] = {}
        self._ids: dict[str, bytes] | None = None  # device id -> key, made at the first look-up by device id
        self._by_index: dict[int, _Peer] = {}  # the local index of each session -> its peer
        self._owed: dict[bytes, float] = {}
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self._drops: Counter[str] = Counter()
        self._inits = self._responses = self._cookie_replies = self._started = 0

    # -- queries -----------------------------------------------------------------------------------------------

    def _peer(self, device: bytes | str) -> _Peer | None:
        pub = self._pub_of(device) if isinstance(device, str) else device
        return None if pub is None else self._peers.get(pub)

    def _pub_of(self, device: str) -> bytes | None:
        """The key of the device with id ``device`` among the peers. The index by id is made at the first call
        and kept from then on: a server that only ever names devices by key (the streamer) holds none."""
        if self._ids is None:
            self._ids = {device_id(pub): pub for pub in self._peers}
        return self._ids.get(device)

    def peer_state(self, device: bytes | str) -> PeerState:
        """The state of ``device`` (its public key or device id)."""
        peer = self._peer(device)
        return PeerState.NONE if peer is None else peer.state

    def has_session(self, device: bytes | str) -> bool:
        """True if :meth:`send` to ``device`` would not raise for lack of a session."""
        return self.peer_state(device) in (PeerState.ESTABLISHED, PeerState.REKEYING)

    def address_of(self, device: bytes | str) -> Address | None:
        """Where datagrams to ``device`` go: the source of its latest authenticated, counter-advancing datagram."""
        peer = self._peer(device)
        return None if peer is None else peer.address

    def handshake_timestamps(self) -> dict[bytes, int]:
        """The greatest accepted init timestamp per device key (a copy)."""
        return dict(self._timestamps)

    def set_under_load(self, value: bool | None) -> None:
        """Force cookie mode on (True) or off (False), or leave it to the init rate (None, the default)."""
        self._forced_load = value

    def is_under_load(self, now: float) -> bool:
        """True when forced, or when more than ``cookie_threshold`` inits with a valid mac1 arrived in the
        last second."""
        while self._recent_inits and self._recent_inits[0] <= now - 1.0:
            self._recent_inits.popleft()
        if self._forced_load is not None:
            return self._forced_load
        return len(self._recent_inits) > self._cookie_threshold

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            MappingProxyType(dict(self._drops)), self._inits, self._responses, self._cookie_replies, self._started,
            sum(1 for p in self._peers.values() if p.current is not None),
        )

    # -- state machine -----------------------------------------------------------------------------------------

    def _step(self, peer: _Peer, event: ServerInput) -> None:
        try:
            peer.state = SERVER_TRANSITIONS[peer.state][event]
        except KeyError:
            raise LocalProtocolError(f"{event.value} is not allowed in state {peer.state.value}") from None
        if peer.state is PeerState.NONE:
            self._peers.pop(peer.pub, None)
            if self._ids is not None:
                self._ids.pop(device_id(peer.pub), None)
        else:
            self._reschedule(peer)

    def _reschedule(self, peer: _Peer, *, force: bool = False) -> None:
        deadline = min((k.created + REJECT_AFTER_TIME for k in peer.sessions()), default=None)
        if deadline is not None and deadline == peer.deadline:
            deadline = peer.deadline  # the same value: keep the one object the heap entry holds, not a copy
        if deadline is not None and (force or deadline != peer.deadline):
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, peer.pub))
        peer.deadline = deadline

    def _drop_keys(self, keys: SessionKeys | None) -> None:
        if keys is not None:
            self._by_index.pop(keys.local_index, None)

    # -- local calls -------------------------------------------------------------------------------------------

    def send(self, device: bytes | str, plaintext: bytes, now: float) -> None:
        """Queue ``plaintext`` (empty = keepalive) to ``device`` on its current session.

        LocalProtocolError, with nothing queued, if the device has no confirmed session (see :meth:`has_session`),
        the session is REJECT_AFTER_TIME old (call :meth:`handle_timeout`), or ``plaintext`` exceeds 1168 bytes.
        """
        peer = self._peers.get(device) if type(device) is bytes else self._peer(device)
        if peer is None or peer.current is None:
            raise LocalProtocolError("no session with this device")
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT}")
        if peer.current.expired(now):
            raise LocalProtocolError("the session expired; call handle_timeout")
        self._seal(peer, bytes(plaintext), now)
        # SEND is a step from ESTABLISHED or REKEYING (the states with a current session) to itself and changes
        # no session, so there is nothing to reschedule: the transition is not taken, for speed (a message to
        # every device of an alert goes through here).

    def send_many(self, items: Iterable[tuple[bytes, bytes]], now: float) -> list[bytes]:
        """:meth:`send` of each ``(device public key, plaintext)``, in order; returns the devices refused (no
        confirmed session, an expired one, or an oversize plaintext), for which nothing was queued."""
        peers, out, owed = self._peers, self._out, self._owed
        refused = []
        for device, plaintext in items:
            peer = peers.get(device)
            if (peer is None or (keys := peer.current) is None or peer.address is None
                    or len(plaintext) > MAX_PLAINTEXT or now >= keys.created + REJECT_AFTER_TIME):
                refused.append(device)
                continue
            out.append((seal_transport_bytes(keys, plaintext), peer.address))
            peer.last_sent = now
            owed.pop(device, None)
        return refused

    def forget(self, device: bytes | str, *, boot: bool = False) -> None:
        """Drop every session of ``device`` (after ``bye``, or when it is revoked); no event is emitted. The
        greatest handshake timestamp is kept, and so is the device's boot unless ``boot`` is true (its next session
        then counts as its first, never as a restart)."""
        if boot:
            pub = self._pub_of(device) if isinstance(device, str) else device
            if pub is not None:
                self._boots.pop(pub, None)
        peer = self._peer(device)
        if peer is None:
            return
        for keys in peer.sessions():
            self._drop_keys(keys)
        peer.current = peer.next = peer.previous = None
        self._step(peer, ServerInput.FORGET)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain the queued ``(datagram, address)`` pairs. Owed keepalives (a keepalive arrived, or a transport
        arrived after the server had been silent to that device for KEEPALIVE_INTERVAL) are added here unless
        something was sent to that device since."""
        owed, self._owed = self._owed, {}
        for pub, since in owed.items():
            peer = self._peers.get(pub)
            if peer is not None and peer.current is not None and not peer.current.expired(since):
                self._seal(peer, b"", since)
        out, self._out = self._out, []
        return out

    def _seal(self, peer: _Peer, plaintext: bytes, now: float) -> None:
        assert peer.current is not None
        assert peer.address is not None
        self._out.append((seal_transport_bytes(peer.current, plaintext), peer.address))
        peer.last_sent = now
        self._owed.pop(peer.pub, None)

    # -- datagrams ---------------------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float) -> list[Event]:
        """Process one datagram from ``address``. Never raises for any input bytes: a bad datagram yields
        ``[Dropped(name)]``, is counted, and changes nothing. (LocalProtocolError if ``address`` is not an IP
        address and port, which only matters when a cookie is computed.)"""
        try:
            if is_init(data):  # checked on its bytes, before anything is built (PROTOCOL.md 3.3.1)
                self._on_init(bytes(data), address, now)
                return []
            index = transport_index(data)
            if index is not None and index not in self._by_index:  # as _on_transport decides, before parsing
                raise UnknownKeyError("transport for no session")
            message = parse(data)
            if isinstance(message, Transport):
                return self._on_transport(message, address, now)
            raise UnknownTypeError("a server does not accept HandshakeResponse or CookieReply")
        except RemoteProtocolError as exc:
            name = type(exc).__name__
            self._drops[name] += 1
            return [Dropped(name)]

    def _on_init(self, data: bytes, address: Address, now: float) -> None:
        """An init (``data``: 148 bytes, :func:`is_init`). The checks of mac1 and mac2 and the CookieReply work on
        its bytes: a flood of inits costs two or three BLAKE2s each and builds nothing (the same decisions, in the
        same order, as on the parsed init)."""
        mac1 = data[HandshakeInit.MAC1_OFFSET : HandshakeInit.MAC2_OFFSET]
        if not self._mac1.verify(data[: HandshakeInit.MAC1_OFFSET], mac1):
            raise BadMacError("HandshakeInit mac1 does not verify")
        self._recent_inits.append(now)
        self._inits += 1
        if self.is_under_load(now):
            cookie = self._cookies.check_mac2(address_bytes(address), data[: HandshakeInit.MAC2_OFFSET],
                                              data[HandshakeInit.MAC2_OFFSET :], now)
            if cookie is not None:
                reply = self._sealer.seal(data[4:8], cookie, mac1, self._random_bytes(12))
                self._out.append((reply, address))
                self._cookie_replies += 1
                return
        init = parse(data)
        assert isinstance(init, HandshakeInit)
        opened = open_init(init, server_static=self._static)
        pub = opened.device_pub
        if not self._is_enrolled(pub):
            raise UnknownKeyError("device key is not enrolled")
        check_timestamp(self._timestamps.get(pub), opened.timestamp)
        index = int.from_bytes(self._random_bytes(4), "big")
        while index in self._by_index:
            index = int.from_bytes(self._random_bytes(4), "big")
        response, keys = build_response(
            opened.handshake, ephemeral=self._random_bytes(32), sender_index=index,
            receiver_index=init.sender_index, boot=self.boot, now=now,
        )
        self._timestamps[pub] = opened.timestamp
        peer = self._peers.get(pub)
        if peer is None:
            peer = self._peers[pub] = _Peer(pub)
            if self._ids is not None:
                self._ids[device_id(pub)] = pub
        self._drop_keys(peer.next)
        peer.next, peer.next_boot = keys, opened.boot
        self._by_index[index] = peer
        self._step(peer, ServerInput.INIT_ACCEPTED)
        self._out.append((response.to_bytes(), address))
        self._responses += 1

    def _on_transport(self, message: Transport, address: Address, now: float) -> list[Event]:
        index = message.receiver_index
        peer = self._by_index.get(index)
        keys = None if peer is None else peer.keys_of(index)
        if peer is None or keys is None:
            raise UnknownKeyError("transport for no session")
        if keys.expired(now):
            raise ExpiredError("transport on an expired session")
        plaintext, advanced = open_transport(keys, message)
        events: list[Event] = []
        if keys is peer.next:
            self._drop_keys(peer.previous)
            peer.previous, peer.current, peer.next = peer.current, keys, None
            last_boot = self._boots.get(peer.pub)
            self._boots[peer.pub] = peer.next_boot
            peer.last_sent = now
            self._started += 1
            self._step(peer, ServerInput.CONFIRMED)
            restarted = last_boot is not None and last_boot != peer.next_boot
            events.append(SessionStarted(peer.pub, peer.next_boot, restarted))
        else:
            self._step(peer, ServerInput.TRANSPORT_ACCEPTED)
        if keys is peer.current and advanced:
            peer.address = address
        if not plaintext or now - peer.last_sent >= KEEPALIVE_INTERVAL:
            self._owed[peer.pub] = now
        events.append(Message(peer.pub, plaintext) if plaintext else Keepalive(peer.pub))
        return events

    # -- timers ------------------------------------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        """The earliest time at which :meth:`handle_timeout` has work (a session expiry), or None."""
        heap = self._heap
        while heap:
            deadline, _, pub = heap[0]
            peer = self._peers.get(pub)
            if peer is not None and peer.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timeout(self, now: float) -> list[Event]:
        """Expire sessions REJECT_AFTER_TIME old; ``SessionLost`` for each device whose current session went."""
        events: list[Event] = []
        while (deadline := self.next_timeout()) is not None and deadline <= now:
            peer = self._peers[heapq.heappop(self._heap)[2]]
            if peer.previous is not None and peer.previous.expired(now):
                self._drop_keys(peer.previous)
                peer.previous = None
                self._step(peer, ServerInput.PREVIOUS_EXPIRED)
            if peer.next is not None and peer.next.expired(now):
                self._drop_keys(peer.next)
                peer.next = None
                self._step(peer, ServerInput.NEXT_EXPIRED)
            if peer.current is not None and peer.current.expired(now):
                self._drop_keys(peer.current)
                self._drop_keys(peer.previous)
                peer.current = peer.previous = None
                self._step(peer, ServerInput.CURRENT_EXPIRED)
                events.append(SessionLost(peer.pub))
            if peer.pub in self._peers:
                self._reschedule(peer, force=True)
        return events
