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
import heapq
import math
import struct
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from loa.protocol._schema import U32_MAX, pack
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
    "EncodedMessage",
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


_U8 = struct.Struct(">BB")
_U16 = struct.Struct(">BH")
_U32 = struct.Struct(">BI")


def _pack_id(msg_id: int) -> bytes:
    """The msgpack encoding of a positive integer below 2^32 (the shortest form, as msgpack writes it)."""
    if msg_id < 0x80:
        return bytes((msg_id,))
    if msg_id < 0x100:
        return _U8.pack(0xCC, msg_id)
    if msg_id < 0x10000:
        return _U16.pack(0xCD, msg_id)
    return _U32.pack(0xCE, msg_id)


class EncodedMessage:
    """A reliable control message encoded once, to be sent on many channels where only its ``id`` differs.

    The wire map starts ``t``, ``id`` (section 4.1: canonical key order), so the bytes with id ``n`` are a fixed
    prefix, the msgpack integer ``n``, and a fixed suffix: :meth:`with_id` returns exactly what
    :func:`~loa.protocol.control.encode` returns for the message with ``id=n``, for the cost of joining three
    byte strings. Raises :class:`LocalProtocolError` (as ``encode`` does) if the message is not reliable, has an
    ``id`` already, breaks the schema, or would be too long with the largest id.
    """

    __slots__ = (
        "_n_acked", "_n_acks_sent", "_n_delivered", "_n_duplicates", "_n_rejected", "_n_retransmitted", "_n_sent",
        "_n_unknown", "_prefix", "_suffix", "message",
    )

    def __init__(self, message: ReliableMessage) -> None:
        if not is_reliable(getattr(message, "TYPE", "")) or isinstance(message, UnknownMessage):
            raise LocalProtocolError(f"{type(message).__name__} is not a reliable control message")
        if getattr(message, "id", None) is not None:
            raise LocalProtocolError("the channel assigns ids; encode the message with id=None")
        self.message = message
        first = encode(dataclasses.replace(message, id=1))
        last = encode(dataclasses.replace(message, id=U32_MAX))  # checks the size with the longest id
        at = (1 if first[0] >> 4 == 0x8 else 3) + len(pack("t")) + len(pack(message.TYPE)) + len(pack("id"))
        self._prefix, self._suffix = first[:at], first[at + 1 :]
        if first[at - 3 : at] != b"\xa2id" or first[at] != 1 or self.with_id(U32_MAX) != last:
            raise AssertionError(f"{message.TYPE}: the wire map does not start with t, id")  # pragma: no cover

    def with_id(self, msg_id: int) -> bytes:
        """The message's bytes with ``id`` = ``msg_id`` (1..2^32-1, not checked here)."""
        return self._prefix + _pack_id(msg_id) + self._suffix



def _rto_of(srtt: float) -> float:
    """Section 4.3.1: the RTO a smoothed RTT gives."""
    return min(max(2 * srtt, RTO_MIN), RTO_MAX)


@dataclass(slots=True)
class _Pending:
    data: bytes
    first_sent: float
    deadline: float
    interval: float
    transmissions: int = 1
    last_sent: float = -math.inf  # the latest retransmission (set with the first one)


class ReliableChannel:
    """Reliable control messages over an unreliable, duplicating, reordering carrier.

    * ``side``: the receiving side this channel belongs to (device or server); messages of types defined only
      for the other direction are then treated as unknown (acknowledged, not delivered). None accepts all.
    * ``rng``: a callable returning floats in [0, 1); when given, each retransmission interval is shortened by
      up to 10 % at random so that many peers' retransmissions do not fall in step.
    * ``max_queued``: how many messages may wait behind the in-flight window before :meth:`send` refuses.
    """

    # A server holds one channel per device: slots, and the messages in flight with their deadline heap, the
    # queue, the lists of datagrams ready, the pending acknowledgements and the set of ids received out of order
    # exist only while they hold something.
    __slots__ = (
        "_above", "_ack_deadline", "_all_due", "_deferred", "_floor", "_handed", "_ids_acked", "_in_flight",
        "_max_queued", "_n_acked", "_n_acks_sent", "_n_delivered", "_n_duplicates", "_n_rejected", "_n_retransmitted",
        "_n_sent", "_n_unknown", "_next_id", "_pending_acks", "_pushed", "_queue", "_ready", "_ready_acks", "_ready_at",
        "_rng", "_rto", "_side", "_srtt", "_timers",
    )

    def __init__(
        self, *, side: Side | None = None, rng: Callable[[], float] | None = None, max_queued: int = 4096
    ) -> None:
        self._side = side
        self._rng = rng
        self._max_queued = max_queued
        self._next_id = 1
        self._in_flight: dict[int, _Pending] | None = None  # None when nothing is in flight; then _timers is too
        self._timers: list[tuple[float, int]] | None = None  # (deadline, id) of in-flight messages; stale skipped
        self._deferred: list[int] | None = None  # expired with an older one, waiting for the peer (see handle_timeout)
        self._all_due = False  # retransmit_now: every due message goes at the next handle_timeout, none deferred
        self._queue: deque[tuple[int, bytes]] | None = None  # messages behind the in-flight window
        self._ready_acks: list[bytes] | None = None  # made at first use, as below
        self._ready: list[bytes] | None = None
        self._ready_at: float | None = None
        self._srtt: float | None = None
        self._rto = RTO_INITIAL
        self._floor = 0
        self._above: set[int] | None = None  # ids above _floor received, while there are any
        self._pending_acks: dict[int, None] | None = None
        self._ack_deadline: float | None = None
        self._n_sent = self._n_retransmitted = self._n_acked = self._n_delivered = 0
        self._n_duplicates = self._n_rejected = self._n_unknown = self._n_acks_sent = 0
        self._ids_acked = 0
        self._pushed = 0  # the highest id put in _ready for its first transmission
        self._handed = 0  # the highest id whose bytes left the channel (outgoing, take_encoded): see withdraw

    @property
    def rto(self) -> float:
        """The retransmission timeout a message sent now gets."""
        return self._rto

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
        self._check_room()
        msg_id = self._next_id
        data = encode(dataclasses.replace(message, id=msg_id))
        self._next_id += 1
        self._enqueue(msg_id, data)
        self._admit(now)
        return msg_id

    def send_encoded(self, message: EncodedMessage, now: float) -> int:
        """Like :meth:`send`, for a message encoded once for many channels (see :class:`EncodedMessage`).

        Raises :class:`LocalProtocolError` (nothing queued, no id used) if the ids are exhausted or
        ``max_queued`` messages already wait.
        """
        self._check_room()
        msg_id = self._next_id
        self._next_id += 1
        self._enqueue(msg_id, message.with_id(msg_id))
        self._admit(now)
        return msg_id

    def take_encoded(self, message: EncodedMessage, now: float) -> tuple[int, bytes | None]:
        """Like :meth:`send_encoded`, but when the message can go out at once and nothing else waits to go out
        before it, it is not queued for :meth:`outgoing`: its bytes are returned with its id, for the caller to
        send now (its retransmission timer runs from ``now``). Otherwise ``(id, None)``: it went the way of
        :meth:`send_encoded`. Raises as :meth:`send_encoded` does."""
        in_flight = self._in_flight
        if (self._queue or self._ready or self._ready_acks or self._next_id > U32_MAX
                or (in_flight and self._next_id - next(iter(in_flight)) >= MAX_IN_FLIGHT)):
            return self.send_encoded(message, now), None
        msg_id = self._next_id
        self._next_id = msg_id + 1
        data = message.with_id(msg_id)
        deadline = now + self._rto
        self._start_timer(msg_id, _Pending(data, now, deadline, self._rto))
        self._n_sent += 1
        self._pushed = self._handed = msg_id
        return msg_id, data

    def _check_room(self) -> None:
        if self._next_id > U32_MAX:
            raise LocalProtocolError("all 2^32-1 ids of this boot are used")
        waiting = len(self._queue) if self._queue is not None else 0
        if waiting >= self._max_queued:
            raise LocalProtocolError(f"{waiting} messages already wait to be sent")

    def _enqueue(self, msg_id: int, data: bytes) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append((msg_id, data))

    def _admit(self, now: float) -> None:
        queue, in_flight = self._queue, self._in_flight
        if queue is None:
            return
        while queue:
            msg_id, data = queue[0]
            if in_flight and msg_id - next(iter(in_flight)) >= MAX_IN_FLIGHT:
                return
            queue.popleft()
            if not queue:
                self._queue = None
            deadline = now + self._rto
            in_flight = self._start_timer(msg_id, _Pending(data, now, deadline, self._rto))
            self._push(data, now)
            self._pushed = msg_id
            self._n_sent += 1

    def _start_timer(self, msg_id: int, pending: _Pending) -> dict[int, _Pending]:
        """Put ``pending`` in flight with its deadline in the heap (both made here if nothing was in flight)."""
        in_flight, timers = self._in_flight, self._timers
        if in_flight is None:
            self._in_flight = in_flight = {}
        in_flight[msg_id] = pending
        if timers is None:
            self._timers = [(pending.deadline, msg_id)]
        else:
            heapq.heappush(timers, (pending.deadline, msg_id))
        return in_flight

    def _push(self, data: bytes, now: float) -> None:
        if self._ready is None:
            self._ready = [data]
        else:
            self._ready.append(data)
        if self._ready_at is None:
            self._ready_at = now

    def retransmit_now(self, now: float) -> None:
        """Retransmit every unacknowledged message at the next :meth:`outgoing` and restart its backoff.

        The interval after that retransmission is the current RTO. Call this when a new session is established
        after a rekey or reconnect (spec section 3.8), so that messages do not wait out a long backoff.
        """
        in_flight = self._in_flight
        if in_flight is None:
            return
        for pending in in_flight.values():
            pending.deadline = now
            pending.interval = self._rto / 2
        self._timers = [(now, msg_id) for msg_id in in_flight]  # ascending ids: already a heap
        self._deferred = None
        self._all_due = True

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
                self._n_duplicates += 1
                return []
            self._mark(envelope.id)
        try:
            message = decode_message(envelope, side=self._side)
        except FieldError:
            self._n_rejected += 1
            raise
        if isinstance(message, UnknownMessage):
            self._n_unknown += 1
            return []
        self._n_delivered += 1
        return [message]

    def is_acked(self, msg_id: int) -> bool:
        """Whether reliable message ``msg_id`` (an id :meth:`send` returned) has been acknowledged."""
        if not 0 < msg_id < self._next_id:
            raise LocalProtocolError(f"id {msg_id} was never sent on this channel")
        in_flight = self._in_flight
        if in_flight is not None and msg_id in in_flight:
            return False
        # queued ids are the newest ones, ascending (contiguous but for withdrawn ones)
        queue = self._queue
        if not queue or msg_id < queue[0][0]:
            return True
        lo, hi = 0, len(queue)
        while lo < hi:
            mid = (lo + hi) // 2
            if queue[mid][0] < msg_id:
                lo = mid + 1
            else:
                hi = mid
        return lo == len(queue) or queue[lo][0] != msg_id

    def withdraw(self, ids: Collection[int], now: float) -> set[int]:
        """Take back messages whose bytes have not left the channel yet; returns the ids taken back.

        A message is taken back while it waits in the queue, or is in flight but has never been handed out by
        :meth:`outgoing` or :meth:`take_encoded` (a server's channel to a device without a session). The peer
        never saw it: its id is a gap the peer's receive window absorbs (section 4.3.1), and for the in-flight
        limit and :meth:`is_acked` it counts as acknowledged. Ids handed out, acknowledged or unknown are left
        alone. Messages queued behind the window may move into it (``now`` starts their timers)."""
        handed = self._handed
        todo = {i for i in ids if i > handed}
        if not todo:
            return set()
        done: set[int] = set()
        in_flight = self._in_flight
        if in_flight is not None:
            gone: set[int] = set()
            for msg_id in todo:
                pending = in_flight.pop(msg_id, None)
                if pending is not None:
                    done.add(msg_id)
                    gone.add(id(pending.data))
            if gone and self._ready is not None:  # an unhanded message is there once, from _admit
                ready = [data for data in self._ready if id(data) not in gone]
                self._ready = ready or None
                if not ready and not self._ready_acks:
                    self._ready_at = None
            if not in_flight:
                self._in_flight = self._timers = None
            else:
                self._compact()
        queue = self._queue
        if queue and len(done) < len(todo):
            kept = deque(entry for entry in queue if entry[0] not in todo)
            done.update(todo.intersection(entry[0] for entry in queue))
            self._queue = kept or None
        if done:
            self._admit(now)
        return done

    def peer_restarted(self) -> None:
        """Forget which ids the peer sent (its ids start again at 1), and acknowledgements not yet sent."""
        self._floor = 0
        self._above = None
        self._pending_acks = None
        self._ack_deadline = None
        self._ready_acks = None

    def _seen(self, msg_id: int) -> bool:
        return msg_id <= self._floor or (self._above is not None and msg_id in self._above)

    def _mark(self, msg_id: int) -> None:
        if msg_id == self._floor + 1 and not self._above:  # in order, the usual case: no set at all
            self._floor = msg_id
            return
        above = self._above if self._above is not None else set()
        if msg_id > self._floor + RECEIVE_WINDOW:
            self._floor = msg_id - RECEIVE_WINDOW
            above = {i for i in above if i > self._floor}
        above.add(msg_id)
        while self._floor + 1 in above:
            self._floor += 1
            above.remove(self._floor)
        self._above = above or None

    def _queue_ack(self, msg_id: int, now: float) -> None:
        if self._pending_acks is None:
            self._pending_acks = {}
        self._pending_acks[msg_id] = None
        if self._ack_deadline is None:
            self._ack_deadline = now + ACK_DELAY
        if len(self._pending_acks) >= MAX_ACK_IDS:
            self._flush_acks(now)

    def _flush_acks(self, now: float) -> None:
        ids = tuple(self._pending_acks or ())
        self._pending_acks = None
        self._ack_deadline = None
        if ids:
            ack = encode(Ack(ids=ids))
            if self._ready_acks is None:
                self._ready_acks = [ack]
            else:
                self._ready_acks.append(ack)
            self._n_acks_sent += 1
            self._ids_acked += len(ids)
            if self._ready_at is None:
                self._ready_at = now

    def _on_ack(self, ids: tuple[int, ...], now: float) -> None:
        in_flight = self._in_flight
        if in_flight is not None:
            for msg_id in ids:
                pending = in_flight.pop(msg_id, None)
                if pending is None:
                    continue
                self._n_acked += 1
                if pending.transmissions == 1:
                    rtt = now - pending.first_sent
                    self._srtt = rtt if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt
                    self._rto = _rto_of(self._srtt)
                else:
                    self._raise_rtt(now - pending.last_sent)
            if not in_flight:  # every heap entry is stale now, and a dict keeps the table it grew to
                self._in_flight = self._timers = self._deferred = None
            elif self._deferred is not None:  # the peer is there: what waited behind the oldest goes now
                deferred, self._deferred = self._deferred, None
                self._retransmit([msg_id for msg_id in deferred if msg_id in in_flight], now)
        self._compact()
        self._admit(now)

    def _raise_rtt(self, bound: float) -> None:
        """Section 4.3.1: a retransmitted message gives no sample (Karn), but whichever of its transmissions
        was acknowledged took at least ``bound`` (from the last one to the acknowledgement). A bound above the
        smoothed RTT (before any sample, above the half of the initial RTO that stands for one) becomes it, and
        the RTO rises to match; a bound never lowers either. A peer seconds behind on its input, which acknowledges
        late what it received long before, then gets the RTO its delay needs instead of a retransmission at
        every expiry of an RTO measured while it kept up."""
        if bound > (self._srtt if self._srtt is not None else RTO_INITIAL / 2):
            self._srtt = bound
            self._rto = max(self._rto, _rto_of(bound))

    # timers and output

    def _next_deadline(self) -> float | None:
        """The earliest retransmission deadline; drops heap entries of acknowledged or rescheduled messages."""
        timers, in_flight = self._timers, self._in_flight
        if timers is None or in_flight is None:
            return None
        while timers:
            deadline, msg_id = timers[0]
            pending = in_flight.get(msg_id)
            if pending is not None and pending.deadline == deadline:
                return deadline
            heapq.heappop(timers)
        return None

    def next_timeout(self) -> float | None:
        """The time at which :meth:`handle_timeout` has work (in the past if output is ready), or None."""
        deadline = self._next_deadline()
        output = self.next_output()
        return output if deadline is None or (output is not None and output < deadline) else deadline

    def next_retransmission(self) -> float | None:
        """The earliest retransmission deadline, or None."""
        return self._next_deadline()

    def next_output(self) -> float | None:
        """When acknowledgements or messages are due to go out, retransmissions aside (in the past if output is
        ready), or None."""
        ack, ready = self._ack_deadline, self._ready_at if (self._ready or self._ready_acks) else None
        return ack if ready is None or (ack is not None and ack < ready) else ready

    def handle_timeout(self, now: float, *, heard: float | None = None) -> None:
        """Send due acknowledgements and retransmit messages whose timer expired (with backoff).

        ``heard``: the peer's datagrams have been read only up to those that arrived at ``heard`` (a receiver
        behind on its input); a message whose deadline is later than that is not retransmitted yet, since its
        acknowledgement may be among what is still unread. None (the default): everything that arrived is read."""
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._flush_acks(now)
        limit = now if heard is None or heard > now else heard
        timers, in_flight = self._timers, self._in_flight
        if not timers or in_flight is None or timers[0][0] > limit:
            return
        due: list[int] = []
        while timers and timers[0][0] <= limit:
            deadline, msg_id = heapq.heappop(timers)
            pending = in_flight.get(msg_id)
            if pending is not None and pending.deadline == deadline:
                due.append(msg_id)
        due.sort()  # in id order, as they were sent
        if len(due) > 1 and not self._all_due:
            # Only the oldest goes now; the others wait, without timers, for an acknowledgement of anything
            # (section 4.3.1): a peer that is away or behind gets one datagram per expiry, not one per message.
            for msg_id in due[1:]:
                in_flight[msg_id].deadline = math.inf
            self._deferred = (self._deferred or []) + due[1:]
            del due[1:]
        self._all_due = False
        self._retransmit(due, now)
        if due:
            self._rto = min(self._rto * 2, RTO_MAX)

    def _retransmit(self, ids: list[int], now: float) -> None:
        """Send the in-flight messages ``ids`` again now, in that order, each with its interval doubled."""
        in_flight, timers = self._in_flight, self._timers
        assert in_flight is not None
        assert timers is not None
        for msg_id in ids:
            pending = in_flight[msg_id]
            pending.transmissions += 1
            pending.last_sent = now
            pending.interval = min(pending.interval * 2, BACKOFF_MAX)
            shorten = RETRANSMIT_JITTER * self._rng() if self._rng is not None else 0.0
            pending.deadline = now + pending.interval * (1 - shorten)
            heapq.heappush(timers, (pending.deadline, msg_id))
            self._push(pending.data, now)
            self._n_retransmitted += 1

    def _compact(self) -> None:
        """Rebuild the deadline heap when acknowledged messages left most of its entries stale (amortised O(1))."""
        timers, in_flight = self._timers, self._in_flight
        if timers is not None and in_flight is not None and len(timers) > 2 * len(in_flight) + 64:
            self._timers = timers = [(p.deadline, i) for i, p in in_flight.items() if p.deadline != math.inf]
            heapq.heapify(timers)

    def outgoing(self, now: float, *, heard: float | None = None) -> list[bytes]:
        """Run :meth:`handle_timeout` (with ``heard``) and return the plaintexts to send now, acknowledgements
        first."""
        self.handle_timeout(now, heard=heard)
        acks, ready = self._ready_acks, self._ready
        self._ready_acks = self._ready = None
        self._ready_at = None
        if ready is not None:
            self._handed = self._pushed
        if acks is None:
            return ready if ready is not None else []
        return acks if ready is None else acks + ready

    def statistics(self) -> ReliableStatistics:
        return ReliableStatistics(
            sent=self._n_sent,
            retransmitted=self._n_retransmitted,
            acked=self._n_acked,
            in_flight=len(self._in_flight or ()),
            queued=len(self._queue) if self._queue is not None else 0,
            delivered=self._n_delivered,
            duplicates=self._n_duplicates,
            rejected=self._n_rejected,
            unknown=self._n_unknown,
            acks_sent=self._n_acks_sent,
            ids_acked=self._ids_acked,
            srtt=self._srtt,
            rto=self._rto,
        )
