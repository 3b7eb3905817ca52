"""Device sessions at the streamer: who is online where, provisional sessions and enrolment, sending to devices.

Sans-I/O, owned by the core. :class:`DeviceSessions` wraps the protocol's ``ServerConnection`` and keeps a
:class:`~loa.streamer.status.DeviceRuntime` per device: online or not, its session address (moved by roaming,
section 3.9), its boot, and what state messages were sent to it. It admits handshakes from enrolled keys, and
from unknown keys as *provisional sessions* while enrolment tokens are out (section 4.5: at most 16 at a time,
one per second per source address, closed with ``bye`` unless a ``hello`` with a valid token comes within 10 s).
What happens to a device is reported to the core through :class:`SessionHooks`.

It implements :class:`~loa.streamer.settings.DeviceLink` for the broadcast managers.

Failure semantics: :meth:`DeviceSessions.receive` never raises for any bytes (drops are counted by the session
layer); sending to a device never raises (a refused message is counted as ``send_refused``).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from loa.protocol.connection import Connected, ConnectionEvent, Disconnected, ServerConnection
from loa.protocol.control import (
    Amp,
    Board,
    BoardClear,
    Bye,
    Config,
    FmPresets,
    Hello,
    Join,
    Message,
    Mute,
    Play,
    Reboot,
    ReliableMessage,
    Rotate,
    Source,
    Volume,
)
from loa.protocol.errors import AuthError, LocalProtocolError
from loa.protocol.reliable import EncodedMessage, ReliableChannel
from loa.protocol.restart import encode_notice, notice_key
from loa.streamer.registry import DeviceEntry, Registry, RegistryError
from loa.streamer.status import (
    SENT_SWEEP_MIN,
    DeviceEnrolled,
    DeviceOffline,
    DeviceOnline,
    DeviceRuntime,
    HelloReceived,
    StreamerEvent,
)

__all__ = ["ENROLMENT_TIMEOUT_S", "MAX_PROVISIONAL", "DeviceSessions", "SessionHooks"]

Address = tuple[str, int]
ENROLMENT_TIMEOUT_S = 10.0
MAX_PROVISIONAL = 16


class SessionHooks(Protocol):
    """What the core does when something happens to a device."""

    def on_online(self, device: bytes, now: float) -> None:
        """An enrolled device has a session (new, or after it enrolled by token)."""

    def on_offline(self, device: bytes) -> None:
        """An enrolled device lost its session (expired, bye, revoked)."""

    def on_moved(self, device: bytes) -> None:
        """The session address of a device changed (roaming)."""

    def on_acks(self, device: bytes, now: float) -> None:
        """A datagram of ``device`` authenticated: acknowledgements may have arrived."""

    def on_message(self, device: bytes, message: Message, now: float) -> bool:
        """A message from an enrolled device; True if the device must be sent its whole state."""

    def on_enrolled(self, device: bytes, entry: DeviceEntry, now: float) -> None:
        """A provisional session redeemed a token: ``device`` is enrolled as ``entry``."""

    def send_state(self, device: bytes, now: float) -> None:
        """Send the device everything it needs after it (or the server) started."""


@functools.lru_cache(maxsize=256)
def _shared_hello(hello: Hello) -> Hello:
    """The first of the equal hellos seen lately. The devices of a fleet send the same ``hello`` (same kind, model,
    firmware and capabilities, id 1 as the first message of their start), and the server keeps each device's:
    equal ones are then held once. (Hellos with an enrolment token are not shared: each is different anyway.)"""
    return hello


# What a message sent to a device without a session is about, for taking it back before it goes (see
# DeviceSessions.end and PROTOCOL.md 4.3.2). A message that *replaces* makes the unsent ones of its subject
# useless: the device applies only the highest id of a state key (section 4.4), and every command is
# self-contained. A broadcast's messages (``("bid", n)``, and its rotations ``("rotate", n)``) go when it ends, a
# board item's (``("board", n)``) when it is cleared or expires. A ``config`` replaces the unsent ones whose every
# key it carries (``("config", keys)``), a ``board_clear`` also the item's unsent ``board``.
_STATE_KEYS = (Volume, Mute, Amp, Source, FmPresets)  # one state key each: the type
_TAGGED = frozenset(("alert", "play"))  # send_tracked tags naming a broadcast: ("alert", bid) for SignedAlert


def _subject(message: Message, tag: Hashable | None) -> tuple[Hashable, bool] | None:
    """``(subject, replaces)`` of a reliable message sent to a device without a session, or None when it is not
    taken back (prefetch; the ends of broadcasts, which :meth:`DeviceSessions.end` sends)."""
    if isinstance(message, _STATE_KEYS):
        return ("state", message.TYPE), True
    if isinstance(message, Board):
        return ("board", message.item), True
    if isinstance(message, BoardClear):
        return ("board_clear", message.item), True
    if isinstance(message, Rotate):
        return ("rotate", message.bid), True
    if isinstance(message, Join | Play):
        return ("bid", message.bid), False
    if isinstance(message, Config):
        return ("config", _config_keys(message)), True
    if isinstance(message, Reboot):
        return ("reboot",), True
    if isinstance(tag, tuple) and len(tag) == 2 and tag[0] in _TAGGED:
        return ("bid", tag[1]), False
    return None


def _config_keys(message: Config) -> frozenset[str]:
    values = message.values
    return frozenset(f.name for f in dataclasses.fields(values) if getattr(values, f.name) is not None)


def _made_useless(subject: Hashable, unsent: dict[Hashable, list[int]]) -> list[Hashable]:
    """The subjects, besides ``subject`` itself, whose unsent messages a replacing message of ``subject`` makes
    useless: a ``board_clear``'s item's ``board``; for a ``config``, every unsent one whose keys it all carries."""
    assert isinstance(subject, tuple)
    if subject[0] == "board_clear":
        return [("board", subject[1])] if ("board", subject[1]) in unsent else []
    if subject[0] == "config":
        keys = subject[1]
        return [s for s in unsent if isinstance(s, tuple) and s[0] == "config" and s != subject and s[1] <= keys]
    return []


def _track(rt: DeviceRuntime, tag: Hashable, msg_id: int, channel: ReliableChannel) -> None:
    """Remember ``msg_id`` as the last message sent to the device under ``tag``.

    Tags are many over a server's life (one per alert, play, content and board message: ``("alert", bid)``…) and
    an acknowledged entry means what no entry means (:meth:`DeviceSessions.send_tracked` sends again). So once
    the table reaches ``rt.sent_sweep_at`` entries it keeps only the unacknowledged ones, and the next sweep waits
    until it has doubled (at least :data:`SENT_SWEEP_MIN`): amortised constant work per message, and a table no
    larger than twice the device's unacknowledged messages (bounded by its channel) or the minimum.
    """
    sent = rt.sent
    if sent is None:
        rt.sent = {tag: msg_id}
        return
    sent[tag] = msg_id
    if len(sent) >= rt.sent_sweep_at:
        kept = {t: i for t, i in sent.items() if not _acked(channel, i)}
        rt.sent = kept or None
        rt.sent_sweep_at = max(SENT_SWEEP_MIN, 2 * len(kept))


def _acked(channel: ReliableChannel, msg_id: int) -> bool:
    """Whether reliable message ``msg_id`` has been acknowledged on ``channel``."""
    return channel.is_acked(msg_id)


class DeviceSessions:
    """Sessions with every device of one streamer (see the module docstring)."""

    def __init__(self, hooks: SessionHooks, *, static_private: bytes, registry: Registry,
                 server_time: Callable[[float], int], events: deque[StreamerEvent], drops: Counter[str],
                 random_bytes: Callable[[int], bytes], rng: random.Random, boot: int | None) -> None:
        self._hooks = hooks
        self._registry = registry
        self._static_private = static_private
        self._server_time = server_time
        self._events = events
        self._drops = drops
        jitter = random.Random(rng.getrandbits(64)).random  # retransmission jitter: no secret, no syscall a draw
        self.conn = ServerConnection(static_private=static_private, is_enrolled=self._admit, boot=boot,
                                     random_bytes=random_bytes, rng=jitter)
        self._runtime: dict[bytes, DeviceRuntime] = {}
        self._by_index: dict[int, bytes] = {}
        self._provisional_by_ip: dict[str, float] = {}
        # devices whose runtime was given a provisional_until (a superset: entries are dropped when next seen
        # cleared), so that the timers look at the few provisional sessions, not at every device
        self._provisional: set[bytes] = set()
        self._unsealed: list[tuple[bytes, Address]] = []  # alert beacons: sent ahead of anything sealed
        self._now = 0.0
        self._address: Address | None = None
        self.wants_flush = False
        self.sessions_started = 0  # handshakes that gave a session: rekeys, and devices joining or coming back
        self.messages: Counter[str] = Counter()  # control messages received, by type (Hello, Ack, Telemetry...)

    # -- queries -----------------------------------------------------------------------------------------------

    def known(self) -> list[bytes]:
        return list(self._runtime)

    def get(self, key: bytes) -> DeviceRuntime | None:
        return self._runtime.get(key)

    def is_online(self, key: bytes) -> bool:
        rt = self._runtime.get(key)
        return rt is not None and rt.online

    def online_count(self) -> int:
        return sum(1 for rt in self._runtime.values() if rt.online)

    @property
    def boot(self) -> int:
        """This server's boot value (section 3.3), new at every start."""
        return self.conn.endpoint.boot

    def session_addresses(self) -> dict[bytes, Address]:
        """Enrolled devices that have a session now, with its address: where a restart notice would go (section
        3.16)."""
        registry = self._registry
        return {key: rt.address for key, rt in self._runtime.items()
                if rt.online and rt.address is not None and registry.is_enrolled(key)}

    def restart_notice(self, device: bytes, old_boot: int) -> bytes | None:
        """The restart notice (section 3.16) for ``device``, whose last session was with a server of boot
        ``old_boot``; None when the device is not enrolled now or ``old_boot`` is this server's own boot."""
        if old_boot == self.boot or not 0 <= old_boot < 1 << 32 or not self._registry.is_enrolled(device):
            return None
        try:
            key = notice_key(self._static_private, device)
        except AuthError:  # a low-order key, which could never have had a session
            return None
        return encode_notice(key, old_boot, self.boot)

    # -- DeviceLink --------------------------------------------------------------------------------------------

    def runtime(self, key: bytes) -> DeviceRuntime:
        rt = self._runtime.get(key)
        if rt is None:
            rt = self._runtime[key] = DeviceRuntime()
        return rt

    def online_address(self, key: bytes) -> Address | None:
        rt = self._runtime.get(key)
        return rt.address if rt is not None and rt.online else None

    def send(self, key: bytes, message: Message, now: float, *, tag: Hashable | None = None) -> int | None:
        try:
            return self.send_checked(key, message, now, tag=tag)
        except LocalProtocolError:
            self._drops["send_refused"] += 1
            return None

    def send_checked(self, key: bytes, message: Message, now: float, *, tag: Hashable | None = None) -> int | None:
        """As :meth:`send`, but a message the connection refuses raises ``LocalProtocolError`` (uncounted)."""
        msg_id = self.conn.send(key, message, now)
        self.wants_flush = True
        if msg_id is not None and not self.conn.is_connected(key):
            self.note_unsent(key, message, msg_id, now, tag=tag)
        return msg_id

    def note_unsent(self, key: bytes, message: Message, msg_id: int, now: float, *,
                    tag: Hashable | None = None) -> None:
        """Remember reliable message ``msg_id``, just queued for ``key`` while it has no session, by its subject;
        the unsent ones it replaces are taken back (see :meth:`end`)."""
        found = _subject(message, tag)
        if found is None:
            return
        subject, replaces = found
        rt = self.runtime(key)
        unsent = rt.unsent
        if unsent is None:
            rt.unsent = unsent = {}
        if replaces:
            for other in _made_useless(subject, unsent):
                self._withdraw(key, unsent.pop(other), now)
        ids = unsent.get(subject)
        if ids is None:
            unsent[subject] = [msg_id]
            return
        if replaces:
            self._withdraw(key, ids, now)
            ids.clear()
        ids.append(msg_id)

    def end(self, key: bytes, bid: int, message: ReliableMessage | None, now: float, *,
            since: float | None) -> int | None:
        """Broadcast ``bid`` is over for ``key``: ``message`` (``leave``, ``alert_cancel``, or None) tells it so.

        While the device has no session, what it was sent of ``bid`` and has not received is taken back, and when
        it lost its session before ``since`` (when this run first sent anything of ``bid``), so that it holds
        nothing of ``bid``, ``message`` is not sent either (PROTOCOL.md 4.3.2). Returns the message's id, or None
        when it was not sent (or refused)."""
        return self._end(key, (("bid", bid), ("rotate", bid)), message, now, since)

    def end_item(self, key: bytes, item: int, message: BoardClear | None, now: float, *,
                 since: float | None) -> int | None:
        """Board item ``item`` is over for ``key`` (cleared, its zones left, or expired): as :meth:`end`, with
        ``board_clear`` (or None) for the item's unsent ``board``."""
        return self._end(key, (("board", item),), message, now, since)

    def _end(self, key: bytes, subjects: tuple[Hashable, ...], message: ReliableMessage | None, now: float,
             since: float | None) -> int | None:
        rt = self._runtime.get(key)
        if rt is not None and rt.unsent is not None:
            ids = [i for subject in subjects for i in rt.unsent.pop(subject, ())]
            if not rt.unsent:
                rt.unsent = None
            if len(self._withdraw(key, ids, now)) < len(ids):
                return None if message is None else self.send(key, message, now)  # some went: it may hold them
        if rt is not None and rt.offline_at is not None and since is not None and rt.offline_at < since:
            return None  # everything of it was sent since it had a session, and is taken back (or ended already)
        return None if message is None else self.send(key, message, now)

    def _withdraw(self, key: bytes, ids: list[int], now: float) -> set[int]:
        done = self.conn.withdraw(key, ids, now)
        if done:
            self._drops["withdrawn"] += len(done)
        return done

    def send_tracked(self, key: bytes, tag: Hashable, message: Message, now: float) -> int | None:
        rt = self.runtime(key)
        previous = None if rt.sent is None else rt.sent.get(tag)
        if previous is not None and not self.acked(key, previous):
            return previous
        msg_id = self.send(key, message, now, tag=tag)
        if msg_id is not None:
            _track(rt, tag, msg_id, self.conn.channel(key))
        return msg_id

    def send_many(self, keys: Sequence[bytes], message: ReliableMessage, now: float, *,
                  tag: Hashable | None = None) -> list[int | None]:
        """:meth:`send` of one reliable message to every device of ``keys``, encoded once (only the id differs
        between devices); the ids, in the order of ``keys`` (None where refused)."""
        if len(keys) < 2:
            return [self.send(key, message, now, tag=tag) for key in keys]
        try:
            encoded = EncodedMessage(message)
        except LocalProtocolError:
            self._drops["send_refused"] += len(keys)
            return [None] * len(keys)
        out = self.conn.send_encoded_many(keys, encoded, now)
        refused = out.count(None)
        if refused:
            self._drops["send_refused"] += refused
        self.wants_flush = True
        is_connected = self.conn.is_connected
        for key, msg_id in zip(keys, out, strict=True):
            if msg_id is not None and not is_connected(key):
                self.note_unsent(key, message, msg_id, now, tag=tag)
        return out

    def send_tracked_many(self, keys: Sequence[bytes], tag: Hashable, message: ReliableMessage,
                          now: float) -> None:
        """:meth:`send_tracked` to every device of ``keys``, the message encoded once."""
        todo = []
        runtimes = self._runtime
        for key in keys:
            rt = runtimes.get(key)
            previous = None if rt is None or rt.sent is None else rt.sent.get(tag)
            if previous is None or self.acked(key, previous):
                todo.append(key)
        for key, msg_id in zip(todo, self.send_many(todo, message, now, tag=tag), strict=True):
            if msg_id is not None:
                _track(self.runtime(key), tag, msg_id, self.conn.channel(key))

    def send_beacon(self, keys: Sequence[bytes], datagram: bytes) -> int:
        runtimes, out = self._runtime, self._unsealed
        before = len(out)
        for key in keys:
            rt = runtimes.get(key)
            if rt is not None and rt.online and rt.address is not None:
                out.append((datagram, rt.address))
        if len(out) > before:
            self.wants_flush = True
        return len(out) - before

    def acked(self, key: bytes, msg_id: int) -> bool:
        return _acked(self.conn.channel(key), msg_id)

    def try_send(self, key: bytes, message: Message, now: float) -> bool:
        """Send an unreliable message if the device has a session now; whether it was sent."""
        if not self.conn.is_connected(key):
            return False
        try:
            self.conn.send(key, message, now)
        except LocalProtocolError:
            self._drops["send_refused"] += 1
            return False
        self.wants_flush = True
        return True

    def srtt(self, key: bytes) -> float | None:
        """The smoothed round-trip time of the device's control channel, once measured."""
        return self.conn.channel(key).statistics().srtt

    # -- I/O ---------------------------------------------------------------------------------------------------

    def receive(self, data: bytes, address: Address, now: float) -> None:
        """One loa datagram (types 1-4) from ``address``."""
        self._now = now
        self._address = address
        try:
            events = self.conn.receive_datagram(data, address, now)
        finally:
            self._address = None
        index = int.from_bytes(data[4:8], "big") if data[0] == 0x04 and len(data) >= 8 else None
        device = self._absorb(events, now, index)
        if device is None and index is not None:
            device = self._by_index.get(index)
        if device is not None:
            self._touch(device, address, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        self.wants_flush = False
        if self._unsealed:
            out, self._unsealed = self._unsealed, []
            out += self.conn.datagrams_to_send()
            return out
        return self.conn.datagrams_to_send()

    def _provisional_runtimes(self) -> list[tuple[bytes, DeviceRuntime]]:
        """The devices on a provisional session now (see ``_provisional``), forgetting those no longer on one."""
        out = []
        for key in list(self._provisional):
            rt = self._runtime.get(key)
            if rt is None or rt.provisional_until is None:
                self._provisional.discard(key)
            else:
                out.append((key, rt))
        return out

    def next_timeout(self) -> float | None:
        times = [self.conn.next_timeout()]
        if self._provisional:
            times += [rt.provisional_until for _, rt in self._provisional_runtimes()]
        return min((t for t in times if t is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        self._now = now
        self._absorb(self.conn.handle_timeout(now), now, None)
        if self._provisional:
            for key, rt in self._provisional_runtimes():
                if rt.provisional_until is not None and now >= rt.provisional_until:
                    self._refuse(key, now)
        for ip in [ip for ip, t in self._provisional_by_ip.items() if now - t >= 1.0]:
            del self._provisional_by_ip[ip]

    # -- session lifecycle -------------------------------------------------------------------------------------

    def _admit(self, key: bytes) -> bool:
        """The session layer's registry check, with provisional sessions while enrolment tokens are out."""
        if self._registry.is_enrolled(key):
            return True
        if key in self._registry or self._address is None:
            return False
        now = self._now
        if not self._registry.tokens_outstanding(self._server_time(now)):
            return False
        provisional = len(self._provisional_runtimes())
        ip = self._address[0]
        last = self._provisional_by_ip.get(ip)
        if provisional >= MAX_PROVISIONAL or (last is not None and now - last < 1.0):
            self._drops["provisional_refused"] += 1
            return False
        self._provisional_by_ip[ip] = now
        return True

    def _absorb(self, events: list[ConnectionEvent], now: float, index: int | None) -> bytes | None:
        """Act on connection events; returns the device the datagram came from, if any event said."""
        device = None
        need_state: list[bytes] = []
        for event in events:
            if isinstance(event, Disconnected):
                if event.device is not None:
                    self._offline(event.device, "session lost")
                continue
            assert event.device is not None
            device = event.device
            if isinstance(event, Connected):
                if index is not None:
                    self._learn_index(device, index)
                wants_state = self._connected(device, event, now)
            else:
                wants_state = self._message(device, event.message, now)
            if wants_state and device not in need_state:
                need_state.append(device)
        for key in need_state:
            if self._registry.is_enrolled(key):
                self.runtime(key).state_sent = True
                self._hooks.send_state(key, now)
        return device

    def _learn_index(self, device: bytes, index: int) -> None:
        """Remember which session index is the device's, so that its datagrams that carry no message (acks,
        keepalives) are still attributed to it."""
        rt = self.runtime(device)
        self._by_index[index] = device
        indexes = (*rt.indexes, index)
        for old in indexes[:-3]:  # current, next and previous session at most
            self._by_index.pop(old, None)
        rt.indexes = indexes[-3:]

    def _touch(self, device: bytes, address: Address, now: float) -> None:
        rt = self._runtime.get(device)
        if rt is None or not rt.online:
            return
        current = self.conn.endpoint.address_of(device)
        if current == address:
            rt.last_seen = now
        if current is not None and current != rt.address:
            rt.address = current
            self._hooks.on_moved(device)
        self._hooks.on_acks(device, now)

    def _connected(self, device: bytes, event: Connected, now: float) -> bool:
        self.sessions_started += 1
        rt = self.runtime(device)
        rt.online = True
        rt.offline_at = rt.unsent = None  # what waits goes now
        rt.boot = event.boot
        rt.last_seen = now
        rt.address = self.conn.endpoint.address_of(device)
        if not self._registry.is_enrolled(device):
            if rt.provisional_until is None:
                rt.provisional_until = now + ENROLMENT_TIMEOUT_S
                self._provisional.add(device)
            return False
        self._events.append(DeviceOnline(device, rt.address, event.boot, event.peer_restarted))
        self._hooks.on_online(device, now)
        return not rt.state_sent

    def _message(self, device: bytes, message: Message, now: float) -> bool:
        self.messages[type(message).__name__] += 1
        rt = self.runtime(device)
        rt.last_seen = now
        if rt.provisional_until is not None:
            return isinstance(message, Hello) and self._enrol(device, message, now)
        if not self._registry.is_enrolled(device):
            return False
        if isinstance(message, Bye):
            self.forget(device, f"bye: {message.reason}" if message.reason else "bye")
            return False
        if isinstance(message, Hello):
            rt.hello = message = _shared_hello(message) if message.token is None else message
            self._events.append(HelloReceived(device, message))
            return True
        return self._hooks.on_message(device, message, now)

    def _enrol(self, device: bytes, hello: Hello, now: float) -> bool:
        rt = self.runtime(device)
        try:
            if hello.token is None:
                raise RegistryError("no enrolment token")
            entry = self._registry.redeem(hello.token, device, self._server_time(now), kind=hello.kind)
        except RegistryError:
            self._drops["enrolment_refused"] += 1
            self._refuse(device, now)
            return False
        rt.provisional_until = None
        rt.hello = hello
        self._events.extend([DeviceEnrolled(device, entry.zone, entry.kind),
                             DeviceOnline(device, rt.address, rt.boot or 0, False), HelloReceived(device, hello)])
        self._hooks.on_enrolled(device, entry, now)
        return True

    def _offline(self, device: bytes, reason: str) -> None:
        rt = self._runtime.get(device)
        if rt is None or not rt.online:
            return
        rt.online = False
        rt.offline_at = self._now
        rt.provisional_until = None
        self._hooks.on_offline(device)
        if device in self._registry:  # enrolled, or revoked just now (provisional sessions are nobody yet)
            self._events.append(DeviceOffline(device, reason))

    def _refuse(self, device: bytes, now: float) -> None:
        """Close a provisional session that did not enrol. Only acknowledgements went out on it, so its message
        channel goes too."""
        self.try_send(device, Bye(reason="enrolment refused"), now)
        self.forget(device, "enrolment refused")
        self._runtime.pop(device, None)
        self.conn.forget(device)

    def forget(self, device: bytes, reason: str) -> None:
        """Drop the device's sessions (after ``bye``, or a revocation). Its message channel stays: message ids
        never restart within a boot, and what is unacknowledged goes out again on its next session."""
        self._offline(device, reason)
        rt = self._runtime.get(device)
        if rt is not None:
            rt.online = False
            rt.provisional_until = None
            rt.state_sent = False
            for index in rt.indexes:
                self._by_index.pop(index, None)
            rt.indexes = ()
        self.conn.endpoint.forget(device)
