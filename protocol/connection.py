"""Control connections: a session (section 3) carrying a reliable control channel (section 4), sans-I/O.

:class:`DeviceConnection` and :class:`ServerConnection` are what a device and the streamer actually drive. They
take datagrams and ``now`` (float seconds on the caller's monotonic clock), return :class:`Received` events
with decoded control messages, and queue datagrams that the caller drains with ``datagrams_to_send()``; the
caller calls ``handle_timeout(now)`` when ``next_timeout()`` comes. Reliable messages sent while no session
exists wait in the channel and go out (with their original ids) as soon as one does; after a peer restart the
receive side of the channel is reset, as section 4.3 requires.

Failure semantics: ``receive_datagram`` never raises for any bytes; a datagram the session drops, or a
plaintext that is not a valid control message, is counted in ``statistics().drops`` by error name and changes
nothing else. Local misuse (a message that breaks the schema, an unreliable message with no session to carry
it) raises :class:`~loa.protocol.errors.LocalProtocolError` with nothing queued.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from loa.protocol.control import Message, ReliableMessage, Side, encode, is_reliable
from loa.protocol.cookie import Address
from loa.protocol.errors import LocalProtocolError, RemoteProtocolError
from loa.protocol.reliable import RTO_MAX, EncodedMessage, ReliableChannel, ReliableStatistics
from loa.protocol.session import (
    DeviceSession,
    DeviceState,
    Dropped,
    Event,
    Keepalive,
    ServerEndpoint,
    SessionLost,
    SessionStarted,
)
from loa.protocol.session import Message as SessionMessage

__all__ = [
    "Connected",
    "ConnectionStatistics",
    "DeviceConnection",
    "Disconnected",
    "Received",
    "ReliableTotals",
    "ServerConnection",
]


@dataclass(frozen=True, slots=True)
class Received:
    """A control message delivered once (duplicates and acks are absorbed). ``device`` is None on a device."""

    device: bytes | None
    message: Message


@dataclass(frozen=True, slots=True)
class Connected:
    """A session is up; ``peer_restarted`` when the peer's ``boot`` changed since the last one."""

    device: bytes | None
    boot: int
    peer_restarted: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """No usable session remains (the device keeps trying; the server waits for the device)."""

    device: bytes | None


ConnectionEvent = Received | Connected | Disconnected


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    drops: dict[str, int]
    channel: ReliableStatistics | None


@dataclass(frozen=True, slots=True)
class ReliableTotals:
    """A server's reliable messages over all its devices' channels, forgotten devices included: sent (first
    transmissions), retransmitted, and duplicates received (a message it had delivered already)."""

    sent: int = 0
    retransmitted: int = 0
    duplicates: int = 0


class DeviceConnection:
    """The device end: initiates the session, numbers and retransmits its reliable messages."""

    def __init__(
        self,
        *,
        static_private: bytes,
        server_public: bytes,
        boot: int | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        rng: Callable[[], float] | None = None,
        timestamp_source: Callable[[float], int] | None = None,
    ) -> None:
        self.session = DeviceSession(
            static_private=static_private,
            server_public=server_public,
            boot=boot,
            random_bytes=random_bytes,
            timestamp_source=timestamp_source,
        )
        self.channel = ReliableChannel(side=Side.DEVICE, rng=rng)
        self._drops: Counter[str] = Counter()
        self._server_boot: int | None = None

    @property
    def connected(self) -> bool:
        return self.session.state in (DeviceState.ESTABLISHED, DeviceState.REKEYING)

    @property
    def server_boot(self) -> int | None:
        """The boot of the server the latest session was with (None before the first)."""
        return self._server_boot

    def connect(self, now: float) -> None:
        self.session.connect(now)

    def close(self) -> None:
        self.session.close()

    def send(self, message: Message, now: float) -> int | None:
        """Send a control message; returns its id if reliable (it is delivered eventually, across sessions).

        An unreliable message is sent only if a session exists now (else LocalProtocolError): it is the kind of
        message (clock probe, fetch, rtcp) that is worthless later.
        """
        if is_reliable(message.TYPE):
            msg_id = self.channel.send(_as_reliable(message), now)
            self._pump(now)
            return msg_id
        if not self.connected:
            raise LocalProtocolError(f"no session to send {message.TYPE!r} on")
        self.session.send(encode(message), now)
        return None

    def receive_datagram(self, data: bytes, now: float) -> list[ConnectionEvent]:
        out = self._absorb(self.session.receive_datagram(data, now), now)
        self._pump(now)
        return out

    def next_timeout(self) -> float | None:
        times = [self.session.next_timeout()]
        if self.connected:
            times.append(self.channel.next_timeout())
        return min((t for t in times if t is not None), default=None)

    def handle_timeout(self, now: float) -> list[ConnectionEvent]:
        out = self._absorb(self.session.handle_timeout(now), now)
        self._pump(now)
        return out

    def datagrams_to_send(self) -> list[bytes]:
        return self.session.datagrams_to_send()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(drops=dict(self._drops), channel=self.channel.statistics())

    def _absorb(self, events: list[Event], now: float) -> list[ConnectionEvent]:
        out: list[ConnectionEvent] = []
        for event in events:
            if isinstance(event, SessionMessage):
                out += [Received(None, m) for m in _deliver(self.channel, event.plaintext, now, self._drops)]
            elif isinstance(event, SessionStarted):
                restarted = self._server_boot is not None and event.boot != self._server_boot
                if restarted:
                    self.channel.peer_restarted()
                self._server_boot = event.boot
                self.channel.retransmit_now(now)
                out.append(Connected(None, event.boot, restarted))
            elif isinstance(event, SessionLost):
                out.append(Disconnected(None))
            elif isinstance(event, Dropped):
                self._drops[event.error] += 1
            elif not isinstance(event, Keepalive):  # pragma: no cover - a new session event type
                raise AssertionError(f"unhandled session event {event!r}")
        return out

    def _pump(self, now: float) -> None:
        if not self.connected:
            return
        for plaintext in self.channel.outgoing(now):
            try:
                self.session.send(plaintext, now)
            except LocalProtocolError:
                # The session expired this instant (its timer has not run yet): what the channel handed out is
                # in flight and goes again, on the next session, when its retransmission time comes.
                return


HOLD_MAX_S = RTO_MAX  # the longest a retransmission is held back for unread input (see ServerConnection)


class ServerConnection:
    """The server end: many devices, one reliable channel each, scheduled by a heap of deadlines.

    Retransmissions after input: a server behind on its socket (a burst of acknowledgements it has not read yet)
    would retransmit messages whose acknowledgements are already waiting in its receive buffer, and every such
    retransmission is one more datagram for the device to take and acknowledge, and for the server to read.
    The I/O layer therefore says how far its input is read (:meth:`set_input_horizon`: the arrival time of the
    latest datagram read, or None once the socket is empty), and a retransmission falls due only when the input
    is read up to its deadline, or :data:`HOLD_MAX_S` after it at the latest. Acknowledgements and first
    transmissions are never held back. A server that never calls it behaves as if its input were always read.
    """

    def __init__(
        self,
        *,
        static_private: bytes,
        is_enrolled: Callable[[bytes], bool],
        boot: int | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.endpoint = ServerEndpoint(
            static_private=static_private, is_enrolled=is_enrolled, boot=boot, random_bytes=random_bytes
        )
        self._rng = rng
        self._channels: dict[bytes, ReliableChannel] = {}
        self._drops: Counter[str] = Counter()
        self._timers: list[tuple[float, bytes]] = []
        self._scheduled: dict[bytes, float] = {}  # the deadline of each device's newest entry in _timers
        self._unconfirmed: set[bytes] = set()
        self._horizon: float | None = None  # see set_input_horizon
        self._held: list[tuple[float, bytes]] = []  # (retransmission deadline, device): held for unread input
        self._held_at: dict[bytes, float] = {}  # the deadline of each device's live entry in _held
        self._forgotten = ReliableTotals()  # the counts of channels dropped by forget()

    def channel(self, device: bytes) -> ReliableChannel:
        """The device's channel (created empty the first time: messages may be queued before it connects)."""
        channel = self._channels.get(device)
        if channel is None:
            channel = self._channels[device] = ReliableChannel(side=Side.SERVER, rng=self._rng)
        return channel

    def devices(self) -> list[bytes]:
        return list(self._channels)

    def set_input_horizon(self, horizon: float | None) -> None:
        """How far the server's input has been read: the arrival time (on the clock of ``now``) of the latest
        datagram read while more wait unread, or None once nothing waits (the default). Retransmissions due
        after it are held (see the class)."""
        self._horizon = horizon

    @property
    def held(self) -> int:
        """Devices with a retransmission held back for unread input now."""
        return len(self._held_at)

    def is_connected(self, device: bytes) -> bool:
        return self.endpoint.has_session(device)

    def send(self, device: bytes, message: Message, now: float) -> int | None:
        """Send to one device; reliable messages are queued until it has a session (see DeviceConnection.send)."""
        if is_reliable(message.TYPE):
            msg_id = self.channel(device).send(_as_reliable(message), now)
            self._pump(device, now)
            return msg_id
        if not self.endpoint.has_session(device):
            raise LocalProtocolError(f"no session to send {message.TYPE!r} on")
        self.endpoint.send(device, encode(message), now)
        return None

    def send_encoded(self, device: bytes, message: EncodedMessage, now: float) -> int:
        """Like :meth:`send` for a reliable message encoded once for many devices (:class:`EncodedMessage`):
        its id on this device's channel. LocalProtocolError (nothing queued) when the channel is full."""
        msg_id = self.channel(device).send_encoded(message, now)
        self._pump(device, now)
        return msg_id

    def send_encoded_many(self, devices: Sequence[bytes], message: EncodedMessage, now: float) -> list[int | None]:
        """:meth:`send_encoded` to each device, in order; the ids (None where the device's channel refused).

        The fast path of an alert to every device: a device with a session whose channel has nothing else to
        send first gets the datagram sealed at once, all in one pass, without the per-device queue round trip.
        A datagram the session refuses then (it expired this instant) is not lost: the message is in flight and
        its retransmission timer sends it again.
        """
        channels, scheduled, timers = self._channels, self._scheduled, self._timers
        has_session = self.endpoint.has_session
        ids: list[int | None] = []
        ready: list[tuple[bytes, bytes]] = []
        for device in devices:
            channel = channels.get(device) or self.channel(device)
            try:
                if not has_session(device):  # queued: it has not left the channel (see withdraw)
                    ids.append(channel.send_encoded(message, now))
                    continue
                msg_id, data = channel.take_encoded(message, now)
            except LocalProtocolError:
                ids.append(None)
                continue
            ids.append(msg_id)
            if data is None:
                self._pump(device, now)
                continue
            # A session that expires this instant refuses it below: it stays in flight and goes with the others
            # when a session is confirmed (retransmit_now), as a queued message would.
            ready.append((device, data))
            # The message's timer is now + RTO. An entry at or before it already in the heap covers it (when it
            # fires, the pump reschedules from the channel); otherwise add one.
            deadline = now + channel.rto
            current = scheduled.get(device)
            if current is None or current > deadline:
                scheduled[device] = deadline
                heapq.heappush(timers, (deadline, device))
        self.endpoint.send_many(ready, now)
        return ids

    def withdraw(self, device: bytes, ids: Collection[int], now: float) -> set[int]:
        """Take back reliable messages to ``device`` that have not been sent yet (a device without a session, whose
        channel still holds them: :meth:`ReliableChannel.withdraw`); returns the ids taken back."""
        channel = self._channels.get(device)
        if channel is None:
            return set()
        done = channel.withdraw(ids, now)
        if done:
            self._pump(device, now)
        return done

    def forget(self, device: bytes) -> None:
        """Drop the device's sessions, its channel and its boot (it was revoked or deleted)."""
        self.endpoint.forget(device, boot=True)
        channel = self._channels.pop(device, None)
        if channel is not None:
            self._forgotten = _add(self._forgotten, channel.statistics())
        self._scheduled.pop(device, None)
        self._held_at.pop(device, None)
        self._unconfirmed.discard(device)

    def receive_datagram(self, data: bytes, address: Address, now: float) -> list[ConnectionEvent]:
        return self._absorb(self.endpoint.receive_datagram(data, address, now), now)

    def next_timeout(self) -> float | None:
        times = [self.endpoint.next_timeout(), self._next_held()]
        while self._timers:
            deadline, device = self._timers[0]
            channel = self._channels.get(device)
            due = self._due(device, channel) if channel is not None and self.endpoint.has_session(device) else None
            if due == deadline:
                times.append(deadline)
                break
            self._pop_timer()  # stale entry: the channel moved on or the device is gone
            if due is not None and device not in self._scheduled:
                # It was the device's newest entry and stood for a later deadline (send_encoded_many adds none
                # behind an earlier entry): the channel's own deadline takes its place.
                self._scheduled[device] = due
                heapq.heappush(self._timers, (due, device))
        return min((t for t in times if t is not None), default=None)

    def handle_timeout(self, now: float) -> list[ConnectionEvent]:
        out = self._absorb(self.endpoint.handle_timeout(now), now)
        while self._timers and self._timers[0][0] <= now:
            device = self._pop_timer()
            if device in self._channels:
                self._pump(device, now)
        held, held_at, horizon = self._held, self._held_at, self._horizon
        while held:
            deadline, device = held[0]
            overdue = deadline + HOLD_MAX_S <= now
            if not (horizon is None or deadline <= horizon or overdue):
                break
            heapq.heappop(held)
            if held_at.get(device) != deadline:
                continue  # stale: the device's messages were acknowledged, or it was held again since
            del held_at[device]
            if device in self._channels:
                self._pump(device, now, hold=not overdue)
        if not held_at:
            self._held = []
        return out

    def _next_held(self) -> float | None:
        """When the earliest held retransmission falls due: at once if the input is read up to its deadline,
        else :data:`HOLD_MAX_S` after it (the I/O layer runs :meth:`handle_timeout` again as its input moves)."""
        held, held_at = self._held, self._held_at
        while held:
            deadline, device = held[0]
            if held_at.get(device) == deadline:
                horizon = self._horizon
                return deadline if horizon is None or deadline <= horizon else deadline + HOLD_MAX_S
            heapq.heappop(held)
        return None

    def _due(self, device: bytes, channel: ReliableChannel) -> float | None:
        """When the device's entry in the timer heap is due: its channel's next timeout, its acknowledgements and
        new messages only while a retransmission of it is held."""
        return channel.next_output() if device in self._held_at else channel.next_timeout()

    def _pop_timer(self) -> bytes:
        deadline, device = heapq.heappop(self._timers)
        scheduled = self._scheduled
        if scheduled.get(device) == deadline:
            del scheduled[device]
            if not scheduled:
                self._scheduled = {}  # a dict keeps the table it grew to: an idle server should not
        return device

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self.endpoint.datagrams_to_send()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(drops=dict(self._drops), channel=None)

    def reliable_totals(self) -> ReliableTotals:
        """Summed over every channel when called (nothing is counted on the per-message path)."""
        forgotten = self._forgotten
        sent, retransmitted, duplicates = forgotten.sent, forgotten.retransmitted, forgotten.duplicates
        for channel in self._channels.values():
            stats = channel.statistics()
            sent += stats.sent
            retransmitted += stats.retransmitted
            duplicates += stats.duplicates
        return ReliableTotals(sent, retransmitted, duplicates)

    def _absorb(self, events: list[Event], now: float) -> list[ConnectionEvent]:
        out: list[ConnectionEvent] = []
        for event in events:
            if isinstance(event, SessionMessage):
                assert event.device_pub is not None
                device = event.device_pub
                messages = _deliver(self.channel(device), event.plaintext, now, self._drops)
                out += [Received(device, m) for m in messages]
                self._pump(device, now, retransmit=self._confirmed(device))
            elif isinstance(event, SessionStarted):
                assert event.device_pub is not None
                device = event.device_pub
                channel = self.channel(device)
                if event.peer_restarted:  # the endpoint keeps each device's boot
                    channel.peer_restarted()
                self._unconfirmed.add(device)
                out.append(Connected(device, event.boot, event.peer_restarted))
            elif isinstance(event, Keepalive):
                if event.device_pub is not None:
                    self._pump(event.device_pub, now, retransmit=self._confirmed(event.device_pub))
            elif isinstance(event, SessionLost):
                out.append(Disconnected(event.device_pub))
            elif isinstance(event, Dropped):
                self._drops[event.error] += 1
        return out

    def _confirmed(self, device: bytes) -> bool:
        """True once, at the first transport message of a new session: what waited can go now."""
        if device in self._unconfirmed and self.endpoint.has_session(device):
            self._unconfirmed.discard(device)
            return True
        return False

    def _pump(self, device: bytes, now: float, *, retransmit: bool = False, hold: bool = True) -> None:
        """Send what the device's channel has due, retransmissions held for unread input unless ``hold`` is false.
        ``retransmit``: everything in flight goes again now (a new session is confirmed), none held."""
        channel = self._channels.get(device)
        if channel is None or not self.endpoint.has_session(device):
            return
        if retransmit:  # a new session confirmed: what was in flight goes again now, whatever is unread
            channel.retransmit_now(now)
            hold = False
        for plaintext in channel.outgoing(now, heard=self._horizon if hold else None):
            self.endpoint.send(device, plaintext, now)
        again, deadline = channel.next_retransmission(), channel.next_output()
        if again is not None and again <= now:  # held for unread input: the held heap has it
            if self._held_at.get(device) != again:
                self._held_at[device] = again
                heapq.heappush(self._held, (again, device))
        else:
            self._held_at.pop(device, None)
            if again is not None and (deadline is None or again < deadline):
                deadline = again
        if deadline is not None and self._scheduled.get(device) != deadline:  # else that entry is in the heap
            self._scheduled[device] = deadline
            heapq.heappush(self._timers, (deadline, device))


def _add(totals: ReliableTotals, channel: ReliableStatistics) -> ReliableTotals:
    return ReliableTotals(totals.sent + channel.sent, totals.retransmitted + channel.retransmitted,
                          totals.duplicates + channel.duplicates)


def _deliver(channel: ReliableChannel, plaintext: bytes, now: float, drops: Counter[str]) -> list[Message]:
    try:
        return channel.receive(plaintext, now)
    except RemoteProtocolError as exc:
        drops[type(exc).__name__] += 1
        return []


def _as_reliable(message: Message) -> ReliableMessage:
    return message  # type: ignore[return-value]  # is_reliable(message.TYPE) was checked by the caller
