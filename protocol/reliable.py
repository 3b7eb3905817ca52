"""Reliable delivery of control messages (spec section 4.3), sans-I/O.

A :class:`ReliableChannel` is one direction pair of control messages between two peers, on plaintext bytes:
it numbers reliable messages, retransmits them until acknowledged, acknowledges and de-duplicates what it
receives. It knows nothing of sessions or encryption: the session layer puts every byte string from
:meth:`ReliableChannel.outgoing` into one transport message, feeds every received plaintext to
:meth:`ReliableChannel.receive`, and calls :meth:`ReliableChannel.peer_restarted` when the peer's ``boot``
changes. Times are seconds on any monotonic clock (floats), passed in as ``now``.

Unreliable messages (``time_req``, ``fetch``, ``rtcp``...) do not go through the channel's queue: encode them
with :func:`loa.protocol.control.encode` and send them directly. Received ones are delivered by
:meth:`ReliableChannel.receive` like the others.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loa.protocol._schema import U32_MAX
from loa.protocol.control import (
    Ack,
    Message,
    ReliableMessage,
    Side,
    UnknownMessage,
    decode_envelope,
    decode_message,
    encode,
    is_reliable,
)
from loa.protocol.errors import FieldError, LocalProtocolError

__all__ = [
    "ACK_DELAY",
    "BACKOFF_MAX",
    "MAX_ACK_IDS",
    "MAX_IN_FLIGHT",
    "RECEIVE_WINDOW",
    "RTO_INITIAL",
    "RTO_MAX",
    "RTO_MIN",
    "ReliableChannel",
    "ReliableStatistics",
]

ACK_DELAY = 0.020
MAX_ACK_IDS = 64
RTO_INITIAL = 0.200
RTO_MIN = 0.100
RTO_MAX = 2.0
BACKOFF_MAX = 8.0
MAX_IN_FLIGHT = 256
RECEIVE_WINDOW = 1024
RETRANSMIT_JITTER = 0.1


@dataclass(frozen=True, slots=True)
class ReliableStatistics:
    """A snapshot of a channel's counters (since it was made) and state."""

    sent: int
    retransmitted: int
    acked: int
    in_flight: int
    queued: int
    delivered: int
    duplicates: int
    rejected: int
    unknown: int
    acks_sent: int
    ids_acked: int
    srtt: float | None
    rto: float


@dataclass(slots=True)
class _Pending:
    data: bytes
    first_sent: float
    deadline: float
    interval: float
    transmissions: int = 1


class ReliableChannel:
    """Reliable control messages over an unreliable, duplicating, reordering carrier.

    * ``side``: the receiving side this channel belongs to (device or server); messages of types defined only
      for the other direction are then treated as unknown (acknowledged, not delivered). None accepts all.
    * ``rng``: a callable returning floats in [0, 1); when given, each retransmission interval is shortened by
      up to 10 % at random so that many peers' retransmissions do not fall in step.
    * ``max_queued``: how many messages may wait behind the in-flight window before :meth:`send` refuses.
    """

    def __init__(
        self, *, side: Side | None = None, rng: Callable[[], float] | None = None, max_queued: int = 4096
    ) -> None:
        self._side = side
        self._rng = rng
        self._max_queued = max_queued
        self._next_id = 1
        self._in_flight: dict[int, _Pending] = {}
        self._queue: deque[tuple[int, bytes]] = deque()
        self._ready_acks: list[bytes] = []
        self._ready: list[bytes] = []
        self._ready_at: float | None = None
        self._srtt: float | None = None
        self._rto = RTO_INITIAL
        self._floor = 0
        self._above: set[int] = set()
        self._pending_acks: dict[int, None] = {}
        self._ack_deadline: float | None = None
        self._counts = dict.fromkeys(
            ("sent", "retransmitted", "acked", "delivered", "duplicates", "rejected", "unknown", "acks_sent"), 0
        )
        self._ids_acked = 0

    # sending

    def send(self, message: ReliableMessage, now: float) -> int:
        """Queue a reliable message; returns the ``id`` it is sent with.

        Raises :class:`LocalProtocolError` (nothing queued, no id used) if the type is not reliable, the
        message already has an ``id``, it breaks the schema, the ids of this boot are exhausted, or
        ``max_queued`` messages already wait.
        """
        if not is_reliable(getattr(message, "TYPE", "")) or isinstance(message, UnknownMessage):
            raise LocalProtocolError(f"{type(message).__name__} is not a reliable control message")
        if getattr(message, "id", None) is not None:
            raise LocalProtocolError("the channel assigns ids; send the message with id=None")
        if self._next_id > U32_MAX:
            raise LocalProtocolError("all 2^32-1 ids of this boot are used")
        if len(self._queue) >= self._max_queued:
            raise LocalProtocolError(f"{len(self._queue)} messages already wait to be sent")
        msg_id = self._next_id
        data = encode(dataclasses.replace(message, id=msg_id))
        self._next_id += 1
        self._queue.append((msg_id, data))
        self._admit(now)
        return msg_id

    def _admit(self, now: float) -> None:
        while self._queue:
            msg_id, data = self._queue[0]
            if self._in_flight and msg_id - next(iter(self._in_flight)) >= MAX_IN_FLIGHT:
                return
            self._queue.popleft()
            self._in_flight[msg_id] = _Pending(data, now, now + self._rto, self._rto)
            self._push(data, now)
            self._counts["sent"] += 1

    def _push(self, data: bytes, now: float) -> None:
        self._ready.append(data)
        if self._ready_at is None:
            self._ready_at = now

    def retransmit_now(self, now: float) -> None:
        """Retransmit every unacknowledged message at the next :meth:`outgoing` and restart its backoff.

        The interval after that retransmission is the current RTO. Call this when a new session is established
        after a rekey or reconnect (spec section 3.8), so that messages do not wait out a long backoff.
        """
        for pending in self._in_flight.values():
            pending.deadline = now
            pending.interval = self._rto / 2

    # receiving

    def receive(self, data: bytes, now: float) -> list[Message]:
        """Process one received plaintext; returns the messages to deliver (none, or one).

        ``ack`` messages are consumed here. A reliable message is acknowledged whether it is new, a duplicate,
        of an unknown type or rejected; duplicates and unknown types are not delivered. Raises
        :class:`OversizeError`, :class:`MalformedError` or :class:`FieldError` for bad input, after having
        scheduled the acknowledgement when the message's ``id`` could be read.
        """
        envelope = decode_envelope(data)
        if envelope.t == Ack.TYPE:
            ack = decode_message(envelope)
            assert isinstance(ack, Ack)
            self._on_ack(ack.ids, now)
            return []
        if envelope.id is not None:
            self._queue_ack(envelope.id, now)
            if self._seen(envelope.id):
                self._counts["duplicates"] += 1
                return []
            self._mark(envelope.id)
        try:
            message = decode_message(envelope, side=self._side)
        except FieldError:
            self._counts["rejected"] += 1
            raise
        if isinstance(message, UnknownMessage):
            self._counts["unknown"] += 1
            return []
        self._counts["delivered"] += 1
        return [message]

    def is_acked(self, msg_id: int) -> bool:
        """Whether reliable message ``msg_id`` (an id :meth:`send` returned) has been acknowledged."""
        if not 0 < msg_id < self._next_id:
            raise LocalProtocolError(f"id {msg_id} was never sent on this channel")
        return msg_id not in self._in_flight and all(queued != msg_id for queued, _ in self._queue)

    def peer_restarted(self) -> None:
        """Forget which ids the peer sent (its ids start again at 1), and acknowledgements not yet sent."""
        self._floor = 0
        self._above.clear()
        self._pending_acks.clear()
        self._ack_deadline = None
        self._ready_acks.clear()

    def _seen(self, msg_id: int) -> bool:
        return msg_id <= self._floor or msg_id in self._above

    def _mark(self, msg_id: int) -> None:
        if msg_id > self._floor + RECEIVE_WINDOW:
            self._floor = msg_id - RECEIVE_WINDOW
            self._above = {i for i in self._above if i > self._floor}
        self._above.add(msg_id)
        while self._floor + 1 in self._above:
            self._floor += 1
            self._above.remove(self._floor)

    def _queue_ack(self, msg_id: int, now: float) -> None:
        self._pending_acks[msg_id] = None
        if self._ack_deadline is None:
            self._ack_deadline = now + ACK_DELAY
        if len(self._pending_acks) >= MAX_ACK_IDS:
            self._flush_acks(now)

    def _flush_acks(self, now: float) -> None:
        ids = tuple(self._pending_acks)
        self._pending_acks.clear()
        self._ack_deadline = None
        if ids:
            self._ready_acks.append(encode(Ack(ids=ids)))
            self._counts["acks_sent"] += 1
            self._ids_acked += len(ids)
            if self._ready_at is None:
                self._ready_at = now

    def _on_ack(self, ids: tuple[int, ...], now: float) -> None:
        for msg_id in ids:
            pending = self._in_flight.pop(msg_id, None)
            if pending is None:
                continue
            self._counts["acked"] += 1
            if pending.transmissions == 1:
                rtt = now - pending.first_sent
                self._srtt = rtt if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt
                self._rto = min(max(2 * self._srtt, RTO_MIN), RTO_MAX)
        self._admit(now)

    # timers and output

    def next_timeout(self) -> float | None:
        """The time at which :meth:`handle_timeout` has work (in the past if output is ready), or None."""
        times = [p.deadline for p in self._in_flight.values()]
        for t in (self._ack_deadline, self._ready_at if (self._ready or self._ready_acks) else None):
            if t is not None:
                times.append(t)
        return min(times, default=None)

    def handle_timeout(self, now: float) -> None:
        """Send due acknowledgements and retransmit messages whose timer expired (with backoff)."""
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._flush_acks(now)
        expired = False
        for pending in self._in_flight.values():
            if now >= pending.deadline:
                expired = True
                pending.transmissions += 1
                pending.interval = min(pending.interval * 2, BACKOFF_MAX)
                shorten = RETRANSMIT_JITTER * self._rng() if self._rng is not None else 0.0
                pending.deadline = now + pending.interval * (1 - shorten)
                self._push(pending.data, now)
                self._counts["retransmitted"] += 1
        if expired:
            self._rto = min(self._rto * 2, RTO_MAX)

    def outgoing(self, now: float) -> list[bytes]:
        """Run :meth:`handle_timeout` and return the plaintexts to send now, acknowledgements first."""
        self.handle_timeout(now)
        out = self._ready_acks + self._ready
        self._ready_acks = []
        self._ready = []
        self._ready_at = None
        return out

    def statistics(self) -> ReliableStatistics:
        c = self._counts
        return ReliableStatistics(
            sent=c["sent"],
            retransmitted=c["retransmitted"],
            acked=c["acked"],
            in_flight=len(self._in_flight),
            queued=len(self._queue),
            delivered=c["delivered"],
            duplicates=c["duplicates"],
            rejected=c["rejected"],
            unknown=c["unknown"],
            acks_sent=c["acks_sent"],
            ids_acked=self._ids_acked,
            srtt=self._srtt,
            rto=self._rto,
        )
