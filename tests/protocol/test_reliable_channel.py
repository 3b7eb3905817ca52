"""ReliableChannel (spec section 4.3): ids, acks, retransmission, duplicates, restarts, a terrible network."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from loa.protocol import control as c
from loa.protocol.errors import FieldError, LocalProtocolError, MalformedError
from loa.protocol.reliable import (
    ACK_DELAY,
    BACKOFF_MAX,
    MAX_ACK_IDS,
    MAX_IN_FLIGHT,
    RECEIVE_WINDOW,
    RTO_INITIAL,
    RTO_MAX,
    RTO_MIN,
    ReliableChannel,
)


def acked_ids(datagrams: list[bytes]) -> list[int]:
    ids: list[int] = []
    for data in datagrams:
        message = c.decode(data)
        if isinstance(message, c.Ack):
            ids += message.ids
    return ids


def ack(*ids: int) -> bytes:
    return c.encode(c.Ack(ids=ids))


def leave(bid: int, msg_id: int) -> bytes:
    return c.encode(c.Leave(bid=bid, id=msg_id))


def answered(ch: ReliableChannel, rtt: float, count: int, now: float = 0.0) -> float:
    """Send ``count`` messages one after another, each acknowledged ``rtt`` after it went; the time after."""
    for _ in range(count):
        msg_id = ch.send(c.Leave(bid=1), now)
        ch.outgoing(now)
        now += rtt
        ch.receive(ack(msg_id), now)
    return now


# ---- sending ----


def test_an_idle_channel_holds_no_containers_and_works_on_after() -> None:
    """Once everything sent is acknowledged, the messages in flight and their deadline heap are gone (a server
    holds one channel per device); the next message makes them again and is retransmitted as the first was."""
    ch = ReliableChannel()
    assert (ch._in_flight, ch._timers) == (None, None)
    ch.send(c.Volume(level=1), 0.0)
    ch.outgoing(0.0)
    ch.receive(ack(1), 0.05)
    assert (ch._in_flight, ch._timers) == (None, None)
    assert ch.is_acked(1)
    assert ch.next_timeout() is None
    ch.retransmit_now(0.1)  # nothing in flight: nothing to do
    assert ch.outgoing(0.1) == []
    assert ch._timers is None
    assert ch.send(c.Volume(level=2), 1.0) == 2
    assert [c.decode(d) for d in ch.outgoing(1.0)] == [c.Volume(level=2, id=2)]
    deadline = ch.next_timeout()
    assert deadline is not None
    assert deadline > 1.0
    assert [c.decode(d) for d in ch.outgoing(deadline)] == [c.Volume(level=2, id=2)]
    ch.receive(ack(2), deadline + 0.01)
    assert (ch._in_flight, ch._timers) == (None, None)
    assert (ch.statistics().in_flight, ch.statistics().retransmitted) == (0, 1)


def test_send_assigns_ids_from_1_and_transmits_at_once() -> None:
    ch = ReliableChannel()
    assert ch.send(c.Volume(level=10), 0.0) == 1
    assert ch.send(c.Mute(on=True), 0.0) == 2
    assert ch.next_timeout() == 0.0
    out = ch.outgoing(0.0)
    assert [c.decode(d) for d in out] == [c.Volume(level=10, id=1), c.Mute(on=True, id=2)]
    assert ch.outgoing(0.0) == []
    assert ch.next_timeout() == pytest.approx(RTO_INITIAL)


@pytest.mark.parametrize(
    "message",
    [c.Ack(ids=(1,)), c.TimeReq(t1=0), c.Bye(reason=""), c.Volume(level=1, id=5), c.UnknownMessage("x", None)],
)
def test_send_refuses_what_is_not_a_fresh_reliable_message(message: Any) -> None:
    ch = ReliableChannel()
    with pytest.raises(LocalProtocolError):
        ch.send(message, 0.0)
    assert ch.statistics().sent == 0


def test_an_invalid_message_uses_no_id() -> None:
    ch = ReliableChannel()
    with pytest.raises(LocalProtocolError):
        ch.send(c.Volume(level=300), 0.0)
    assert ch.send(c.Volume(level=30), 0.0) == 1


def test_queue_limit() -> None:
    ch = ReliableChannel(max_queued=2)
    for _ in range(MAX_IN_FLIGHT + 2):
        ch.send(c.Leave(bid=1), 0.0)
    with pytest.raises(LocalProtocolError, match="wait"):
        ch.send(c.Leave(bid=1), 0.0)


def test_retransmission_backoff_doubles_to_8_s_and_never_stops() -> None:
    ch = ReliableChannel()
    ch.send(c.Leave(bid=1), 0.0)
    times = []
    now = 0.0
    ch.outgoing(now)
    while now < 120:
        deadline = ch.next_timeout()
        assert deadline is not None
        now = deadline
        if ch.outgoing(now):
            times.append(now)
    gaps = [round(b - a, 6) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:7] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, BACKOFF_MAX]
    assert set(gaps[6:]) == {BACKOFF_MAX}
    assert ch.statistics().retransmitted == len(times)


def test_rto_follows_smoothed_rtt_times_two_within_bounds() -> None:
    ch = ReliableChannel()
    now = answered(ch, 0.030, 40)
    stats = ch.statistics()
    assert stats.srtt == pytest.approx(0.030)
    assert stats.rto == RTO_MIN
    for _ in range(40):
        msg_id = ch.send(c.Leave(bid=1), now)
        ch.outgoing(now)
        now += 0.7
        ch.receive(ack(msg_id), now)
    assert ch.statistics().rto == pytest.approx(1.4, rel=0.05)
    for _ in range(40):
        msg_id = ch.send(c.Leave(bid=1), now)
        ch.outgoing(now)
        now += 1.9
        ch.handle_timeout(now - 0.5)
        ch.receive(ack(msg_id), now)
    assert ch.statistics().rto == RTO_MAX


def test_karn_retransmitted_messages_give_no_rtt_sample_and_back_off_the_rto() -> None:
    ch = ReliableChannel()
    ch.send(c.Leave(bid=1), 0.0)
    ch.outgoing(0.0)
    ch.outgoing(RTO_INITIAL)
    assert ch.statistics().rto == 2 * RTO_INITIAL
    ch.receive(ack(1), 0.25)  # 0.05 s after the retransmission: below the 0.1 s the initial RTO stands for
    assert ch.statistics().srtt is None
    assert ch.statistics().rto == 2 * RTO_INITIAL
    assert ch.statistics().in_flight == 0


def test_a_late_ack_of_a_retransmitted_message_raises_the_rtt_to_its_bound() -> None:
    """Section 4.3.1: from the last transmission to the acknowledgement is a lower bound, and it is taken."""
    ch = ReliableChannel()
    start = answered(ch, 0.01, 30)  # a peer that answers in 10 ms: srtt 0.01, RTO at its floor
    assert ch.statistics().srtt == pytest.approx(0.01)
    assert ch.statistics().rto == RTO_MIN
    msg_id = ch.send(c.Leave(bid=2), start)
    ch.outgoing(start)
    sent = [round(t - start, 6) for t in (start + 0.1, start + 0.3, start + 0.7, start + 1.5) if ch.outgoing(t)]
    assert sent == [0.1, 0.3, 0.7, 1.5]
    assert ch.statistics().rto == pytest.approx(1.6)
    ch.receive(ack(msg_id), start + 2.5)  # 2.5 s after the first transmission, 1.0 s after the last
    assert ch.statistics().srtt == pytest.approx(1.0)  # the bound, not 2.5 (Karn)
    assert ch.statistics().rto == RTO_MAX
    # the peer keeps up again: each prompt sample pulls srtt down by an eighth of the way, no faster
    msg_id = ch.send(c.Leave(bid=3), start + 3.0)
    ch.outgoing(start + 3.0)
    ch.receive(ack(msg_id), start + 3.01)
    assert ch.statistics().srtt == pytest.approx(0.875 * 1.0 + 0.125 * 0.01)
    assert ch.statistics().rto == pytest.approx(2 * (0.875 * 1.0 + 0.125 * 0.01))


def test_a_bound_below_the_smoothed_rtt_changes_nothing() -> None:
    ch = ReliableChannel()
    now = answered(ch, 0.5, 30)
    srtt = ch.statistics().srtt
    assert srtt == pytest.approx(0.5)
    msg_id = ch.send(c.Leave(bid=2), now)
    ch.outgoing(now)
    assert ch.outgoing(now + 1.0)  # retransmitted once: the RTO doubles
    ch.receive(ack(msg_id), now + 1.2)  # a bound of 0.2 s
    assert ch.statistics().srtt == srtt
    assert ch.statistics().rto == pytest.approx(2.0)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.floats(0.0, 12.0), st.integers(0, 5)), min_size=1, max_size=10))
def test_rtt_bounds_never_overestimate_a_lagging_peer(rounds: list[tuple[float, int]]) -> None:
    """A peer reads its input ``lag`` seconds late and acknowledges what it reads at once; the first ``lost``
    transmissions of each message never reach it. Whatever the lags, the smoothed RTT never exceeds the longest
    round trip there was, and the acknowledgement of a retransmitted message never lowers the RTO or the
    smoothed RTT."""
    ch = ReliableChannel()
    now, longest = 0.0, 0.0
    for lag, lost in rounds:
        msg_id = ch.send(c.Leave(bid=1), now)
        sent = [now] if ch.outgoing(now) else []
        while True:  # the sender's timers run until the first transmission that arrives is acknowledged
            deadline = ch.next_timeout()
            assert deadline is not None
            if len(sent) > lost and sent[lost] + lag <= deadline:
                break
            if ch.outgoing(deadline):
                sent.append(deadline)
        before = ch.statistics()
        now = sent[lost] + lag
        ch.receive(ack(msg_id), now)
        longest = max(longest, lag)
        after = ch.statistics()
        assert after.in_flight == 0
        if after.srtt is not None:
            assert after.srtt <= longest + 1e-9
        if len(sent) > 1:
            assert after.rto >= before.rto
            assert before.srtt is None or (after.srtt is not None and after.srtt >= before.srtt)


def test_jitter_shortens_retransmission_intervals_by_at_most_10_percent() -> None:
    ch = ReliableChannel(rng=lambda: 0.999)
    ch.send(c.Leave(bid=1), 0.0)
    ch.outgoing(0.0)
    ch.outgoing(0.2)
    deadline = ch.next_timeout()
    assert deadline is not None
    assert 0.2 + 0.4 * 0.9 <= deadline < 0.2 + 0.4


def test_at_most_256_in_flight_and_the_window_is_in_id_space() -> None:
    ch = ReliableChannel()
    for _ in range(300):
        ch.send(c.Leave(bid=1), 0.0)
    assert len(ch.outgoing(0.0)) == MAX_IN_FLIGHT
    assert ch.statistics().queued == 300 - MAX_IN_FLIGHT
    ch.receive(ack(*range(2, 66)), 0.1)
    ch.receive(ack(*range(66, 130)), 0.1)
    assert ch.outgoing(0.1) == []
    assert ch.statistics().in_flight == MAX_IN_FLIGHT - 128
    ch.receive(ack(1), 0.15)
    out = ch.outgoing(0.15)
    assert [c.decode(d).id for d in out] == list(range(257, 301))  # type: ignore[union-attr]


def ids(out: list[bytes]) -> list[int]:
    return [c.decode(d).id for d in out]  # type: ignore[union-attr,misc]


def test_retransmit_now_resends_everything_unacknowledged() -> None:
    ch = ReliableChannel()
    for _ in range(3):
        ch.send(c.Leave(bid=1), 0.0)
    ch.outgoing(0.0)
    for t in (0.2, 0.6, 1.4):
        ch.outgoing(t)
    ch.receive(ack(2), 1.5)
    ch.outgoing(1.5)
    ch.retransmit_now(2.0)
    assert ids(ch.outgoing(2.0)) == [1, 3]


def test_messages_expiring_together_send_only_the_oldest_until_the_peer_answers() -> None:
    ch = ReliableChannel()
    for _ in range(5):
        ch.send(c.Leave(bid=1), 0.0)
    assert ids(ch.outgoing(0.0)) == [1, 2, 3, 4, 5]
    assert ids(ch.outgoing(0.2)) == [1]  # all five expired: one datagram, not five
    assert ch.next_timeout() == pytest.approx(0.6)  # only the oldest keeps a timer
    assert ids(ch.outgoing(0.61)) == [1]
    assert ch.statistics().retransmitted == 2
    ch.receive(ack(1, 3), 0.7)  # the peer answers: the others go at once, each on its own timer from now
    assert ids(ch.outgoing(0.7)) == [2, 4, 5]
    assert ch.next_timeout() == pytest.approx(0.7 + 2 * RTO_INITIAL)
    ch.receive(ack(2, 4, 5), 0.8)
    assert ch.statistics().in_flight == 0
    assert ch.next_timeout() is None


def test_a_message_expiring_alone_is_retransmitted_on_its_own_timer() -> None:
    ch = ReliableChannel()
    ch.send(c.Leave(bid=1), 0.0)
    ch.outgoing(0.0)
    ch.send(c.Leave(bid=2), 0.1)
    ch.outgoing(0.1)
    assert ids(ch.outgoing(0.2)) == [1]
    assert ids(ch.outgoing(0.31)) == [2]  # expired after the other's retransmission, in a handling of its own
    ch.receive(ack(1, 2), 0.35)
    assert ch.statistics().in_flight == 0


@given(st.integers(1, 40), st.lists(st.floats(0.001, 3.0), min_size=1, max_size=60))
def test_a_silent_peer_costs_one_datagram_per_expiry_whatever_is_in_flight(n: int, steps: list[float]) -> None:
    many, one = ReliableChannel(), ReliableChannel()
    for _ in range(n):
        many.send(c.Leave(bid=1), 0.0)
    one.send(c.Leave(bid=1), 0.0)
    many.outgoing(0.0)
    one.outgoing(0.0)
    now = 0.0
    for step in steps:
        now += step
        assert len(many.outgoing(now)) == len(one.outgoing(now)) <= 1
    assert many.next_timeout() == one.next_timeout()


# ---- receiving ----


def test_acks_wait_20_ms_and_batch() -> None:
    ch = ReliableChannel()
    assert ch.receive(leave(5, 1), 1.0) == [c.Leave(bid=5, id=1)]
    assert ch.receive(leave(6, 2), 1.01) == [c.Leave(bid=6, id=2)]
    assert ch.next_timeout() == pytest.approx(1.0 + ACK_DELAY)
    assert ch.outgoing(1.015) == []
    assert acked_ids(ch.outgoing(1.0 + ACK_DELAY)) == [1, 2]
    assert ch.next_timeout() is None


def test_64_pending_acks_go_at_once() -> None:
    ch = ReliableChannel()
    for i in range(1, MAX_ACK_IDS + 2):
        ch.receive(leave(i, i), 0.0)
    out = ch.outgoing(0.0)
    assert len(out) == 1
    assert acked_ids(out) == list(range(1, MAX_ACK_IDS + 1))
    assert acked_ids(ch.outgoing(ACK_DELAY)) == [MAX_ACK_IDS + 1]


def test_duplicates_are_acked_again_but_delivered_once() -> None:
    ch = ReliableChannel()
    assert ch.receive(leave(5, 1), 0.0) == [c.Leave(bid=5, id=1)]
    assert ch.receive(leave(5, 1), 0.001) == []
    assert acked_ids(ch.outgoing(0.1)) == [1]
    assert ch.receive(leave(5, 1), 0.2) == []
    assert acked_ids(ch.outgoing(0.3)) == [1]
    stats = ch.statistics()
    assert (stats.delivered, stats.duplicates) == (1, 2)


def test_delivery_is_in_arrival_order_not_id_order() -> None:
    ch = ReliableChannel()
    got = [m for i in (3, 1, 2) for m in ch.receive(leave(i, i), 0.0)]
    assert [m.id for m in got] == [3, 1, 2]  # type: ignore[union-attr]


def test_unknown_reliable_types_are_acked_and_not_delivered() -> None:
    ch = ReliableChannel()
    assert ch.receive(msgpack.packb({"t": "x_future", "id": 4, "z": 1}), 0.0) == []
    assert ch.receive(msgpack.packb({"t": "x_future"}), 0.0) == []
    assert acked_ids(ch.outgoing(1.0)) == [4]
    assert ch.statistics().unknown == 2


def test_wrong_direction_types_are_treated_as_unknown() -> None:
    device = ReliableChannel(side=c.Side.DEVICE)
    hello = c.encode(c.Hello(kind="speaker", model="m", fw="1", caps=(), id=1))
    assert device.receive(hello, 0.0) == []
    assert acked_ids(device.outgoing(1.0)) == [1]


def test_rejected_messages_are_acked_raised_and_then_duplicates() -> None:
    ch = ReliableChannel()
    bad = msgpack.packb({"t": "volume", "id": 9, "level": 101})
    with pytest.raises(FieldError):
        ch.receive(bad, 0.0)
    assert ch.receive(bad, 0.01) == []
    assert acked_ids(ch.outgoing(1.0)) == [9]
    assert ch.statistics().rejected == 1
    with pytest.raises(MalformedError):
        ch.receive(b"\xc1", 1.0)
    with pytest.raises(FieldError):
        ch.receive(msgpack.packb({"t": "volume", "id": 0, "level": 1}), 1.0)
    assert ch.outgoing(2.0) == []


def test_unreliable_messages_are_delivered_every_time() -> None:
    ch = ReliableChannel()
    probe = c.encode(c.TimeReq(t1=5))
    assert ch.receive(probe, 0.0) == ch.receive(probe, 0.0) == [c.TimeReq(t1=5)]
    assert ch.outgoing(1.0) == []


def test_peer_restart_resets_duplicate_suppression() -> None:
    ch = ReliableChannel()
    assert ch.receive(leave(1, 1), 0.0)
    ch.peer_restarted()
    assert ch.outgoing(1.0) == []
    assert ch.receive(leave(2, 1), 1.0) == [c.Leave(bid=2, id=1)]


def test_receive_memory_is_bounded_when_the_first_id_seen_is_high() -> None:
    ch = ReliableChannel()
    first = 100_000
    for i in range(first, first + 3 * RECEIVE_WINDOW, 2):
        assert ch.receive(leave(1, i), 0.0)
        assert len(ch._above or ()) <= RECEIVE_WINDOW
    assert ch.receive(leave(1, first + 3 * RECEIVE_WINDOW - 3), 0.0)
    assert ch.receive(leave(1, first), 0.0) == []


def test_acks_for_unknown_ids_are_ignored() -> None:
    ch = ReliableChannel()
    ch.send(c.Leave(bid=1), 0.0)
    ch.receive(ack(1, 2, 3, 4), 0.05)
    assert ch.statistics().acked == 1


# ---- a terrible network ----


@dataclass
class Net:
    """Seeded datagram carrier with loss, duplication and reordering, in virtual time."""

    rng: random.Random
    loss: float
    dup: float
    delay: tuple[float, float] = (0.010, 0.250)
    queue: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    seq: int = 0
    carried: int = 0

    def send(self, now: float, dst: str, data: bytes) -> None:
        self.carried += 1
        if self.rng.random() < self.loss:
            return
        for _ in range(2 if self.rng.random() < self.dup else 1):
            self.seq += 1
            heapq.heappush(self.queue, (now + self.rng.uniform(*self.delay), self.seq, dst, data))


def run_pair(seed: int, loss: float, n: int) -> tuple[dict[str, list[Any]], dict[str, ReliableChannel], Net]:
    rng = random.Random(seed)
    net = Net(rng, loss, dup=0.1)
    chans = {
        "a": ReliableChannel(side=c.Side.SERVER, rng=rng.random),
        "b": ReliableChannel(side=c.Side.DEVICE, rng=rng.random),
    }
    sends = sorted(
        [(rng.uniform(0, 30), "a", c.Leave(bid=i)) for i in range(n)]
        + [(rng.uniform(0, 30), "b", c.State(bid=i, src="ip", since=i)) for i in range(n)],
        key=lambda s: s[0],
    )
    delivered: dict[str, list[Any]] = {"a": [], "b": []}
    now = 0.0
    while True:
        times = [t for t in (chans["a"].next_timeout(), chans["b"].next_timeout()) if t is not None]
        if sends:
            times.append(sends[0][0])
        if net.queue:
            times.append(net.queue[0][0])
        if not times:
            break
        now = max(now, min(times))
        assert now < 3600, "no quiescence within an hour of virtual time"
        while sends and sends[0][0] <= now:
            _, src, message = sends.pop(0)
            chans[src].send(message, now)
        while net.queue and net.queue[0][0] <= now:
            _, _, dst, data = heapq.heappop(net.queue)
            delivered[dst] += chans[dst].receive(data, now)
        for name, other in (("a", "b"), ("b", "a")):
            for data in chans[name].outgoing(now):
                net.send(now, other, data)
    return delivered, chans, net


@pytest.mark.parametrize("seed", range(3))
def test_exactly_once_at_30_percent_loss_both_ways(seed: int) -> None:
    n = 300
    delivered, chans, _ = run_pair(seed, 0.30, n)
    assert sorted(m.bid for m in delivered["b"]) == list(range(n))
    assert sorted(m.bid for m in delivered["a"]) == list(range(n))
    for name in "ab":
        stats = chans[name].statistics()
        assert stats.in_flight == stats.queued == 0
        assert stats.acked == stats.sent == n
        assert stats.retransmitted <= 3 * n
    assert chans["a"].statistics().duplicates > 0


def test_no_retransmission_on_a_clean_fast_network() -> None:
    rng = random.Random(1)
    a, b = ReliableChannel(rng=rng.random), ReliableChannel(rng=rng.random)
    now = 0.0
    for i in range(100):
        a.send(c.Leave(bid=i), now)
        for data in a.outgoing(now):
            b.receive(data, now + 0.01)
        now += 0.05
        for data in b.outgoing(now):
            a.receive(data, now + 0.01)
    assert a.statistics().retransmitted == 0
    assert a.statistics().acked == 100


# ---- stateful test against a reference model ----


class ChannelPair(RuleBasedStateMachine):
    """Two channels over a hand-driven network; the model is the set of bids sent each way."""

    @initialize(seed=st.integers(0, 2**16))
    def setup(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.chans = {"a": ReliableChannel(), "b": ReliableChannel()}
        self.wire: list[tuple[str, bytes]] = []
        self.now = 0.0
        self.bid = 0
        self.sent: dict[str, set[int]] = {"a": set(), "b": set()}
        self.got: dict[str, list[int]] = {"a": [], "b": []}

    def _pump(self) -> None:
        for name, other in (("a", "b"), ("b", "a")):
            self.wire += [(other, d) for d in self.chans[name].outgoing(self.now)]

    @rule(src=st.sampled_from("ab"))
    def send(self, src: str) -> None:
        self.bid += 1
        self.chans[src].send(c.Leave(bid=self.bid), self.now)
        self.sent[src].add(self.bid)
        self._pump()

    @precondition(lambda self: self.wire)
    @rule(pick=st.integers(0, 10**6), keep=st.booleans())
    def deliver(self, pick: int, keep: bool) -> None:
        i = pick % len(self.wire)
        dst, data = self.wire[i] if keep else self.wire.pop(i)
        self.got[dst] += [m.bid for m in self.chans[dst].receive(data, self.now)]  # type: ignore[union-attr]
        self._pump()

    @precondition(lambda self: self.wire)
    @rule(pick=st.integers(0, 10**6))
    def lose(self, pick: int) -> None:
        self.wire.pop(pick % len(self.wire))

    @rule(dt=st.sampled_from([0.001, 0.02, 0.2, 1.0, 9.0]))
    def wait(self, dt: float) -> None:
        self.now += dt
        self._pump()

    @invariant()
    def delivered_at_most_once_and_only_what_was_sent(self) -> None:
        for dst, src in (("a", "b"), ("b", "a")):
            assert len(self.got[dst]) == len(set(self.got[dst]))
            assert set(self.got[dst]) <= self.sent[src]

    def teardown(self) -> None:
        if not hasattr(self, "chans"):
            return
        for _ in range(200):
            self.now += 0.05
            self._pump()
            while self.wire:
                dst, data = self.wire.pop(0)
                self.got[dst] += [m.bid for m in self.chans[dst].receive(data, self.now)]  # type: ignore[union-attr]
            if all(ch.next_timeout() is None for ch in self.chans.values()):
                break
        assert sorted(self.got["b"]) == sorted(self.sent["a"])
        assert sorted(self.got["a"]) == sorted(self.sent["b"])


ChannelPair.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_channel_pair_against_model = ChannelPair.TestCase


def test_is_acked_follows_the_acknowledgement() -> None:
    channel = ReliableChannel()
    first = channel.send(c.Volume(level=1), 0.0)
    second = channel.send(c.Volume(level=2), 0.0)
    assert not channel.is_acked(first)
    channel.receive(c.encode(c.Ack(ids=(first,))), 0.05)
    assert channel.is_acked(first)
    assert not channel.is_acked(second)
    with pytest.raises(LocalProtocolError):
        channel.is_acked(second + 1)
