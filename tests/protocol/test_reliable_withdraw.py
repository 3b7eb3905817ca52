"""Taking back reliable messages that have not gone out (``ReliableChannel.withdraw``, PROTOCOL.md 4.3.2)."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from loa.protocol import control as c
from loa.protocol.reliable import MAX_IN_FLIGHT, EncodedMessage, ReliableChannel


def ids_of(datagrams: list[bytes]) -> list[int]:
    return [m.id for m in map(c.decode, datagrams) if not isinstance(m, c.Ack)]  # type: ignore[union-attr]


def test_what_never_left_is_taken_back_and_counts_as_acknowledged() -> None:
    channel = ReliableChannel()
    first = channel.send(c.Volume(level=1), 0.0)
    assert ids_of(channel.outgoing(0.0)) == [first]
    waiting = [channel.send(c.Volume(level=n), 0.05) for n in range(2, 6)]
    assert channel.withdraw([first, *waiting[:3], 999], 0.1) == set(waiting[:3])  # the first left already
    assert all(channel.is_acked(i) for i in waiting[:3])
    assert not channel.is_acked(first)
    assert not channel.is_acked(waiting[3])
    assert ids_of(channel.outgoing(0.15)) == [waiting[3]]
    assert channel.withdraw([waiting[3]], 0.16) == set()  # handed out: no longer ours to take back


def test_a_withdrawn_id_frees_the_in_flight_window() -> None:
    """The window is in id space (section 4.3.1): a message taken back counts as acknowledged for it."""
    channel = ReliableChannel()
    ids = [channel.send(c.Volume(level=n % 101), 0.0) for n in range(MAX_IN_FLIGHT + 10)]
    assert channel.statistics().queued == 10
    assert channel.withdraw(ids[:5], 0.0) == set(ids[:5])
    stats = channel.statistics()
    assert (stats.in_flight, stats.queued) == (MAX_IN_FLIGHT, 5)
    out = ids_of(channel.outgoing(0.0))
    assert out == ids[5 : MAX_IN_FLIGHT + 5]
    # queued ones taken back leave gaps: is_acked still tells each id apart
    assert channel.withdraw([ids[-1], ids[-3]], 0.1) == {ids[-1], ids[-3]}
    assert [channel.is_acked(i) for i in ids[-5:]] == [False, False, True, False, True]
    assert channel.statistics().queued == 3


def test_an_encoded_message_taken_at_once_has_left() -> None:
    channel = ReliableChannel()
    msg_id, data = channel.take_encoded(EncodedMessage(c.Leave(bid=7)), 0.0)
    assert data is not None
    assert channel.withdraw([msg_id], 0.1) == set()


class OfflineSender(RuleBasedStateMachine):
    """A sender whose peer is away part of the time (nothing leaves then, as at a server without a session) and
    which takes back messages at random; the model: what the peer must get is everything sent and not taken
    back, and nothing taken back ever reaches it."""

    @initialize(seed=st.integers(0, 2**16))
    def setup(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tx, self.rx = ReliableChannel(rng=self.rng.random), ReliableChannel()
        self.wire: list[tuple[str, bytes]] = []
        self.now = 0.0
        self.online = True
        self.sent: dict[int, int] = {}  # id -> bid
        self.withdrawn: set[int] = set()
        self.on_wire: set[int] = set()
        self.got: list[int] = []
        self.bid = 0

    def _pump(self) -> None:
        if self.online:
            out = self.tx.outgoing(self.now)
            self.on_wire.update(ids_of(out))
            self.wire += [("rx", d) for d in out]
        self.wire += [("tx", d) for d in self.rx.outgoing(self.now)]

    @rule(encoded=st.booleans(), fast=st.booleans())
    def send(self, encoded: bool, fast: bool) -> None:
        self.bid += 1
        message = c.Leave(bid=self.bid)
        if not encoded:
            msg_id = self.tx.send(message, self.now)
        elif fast and self.online:
            msg_id, data = self.tx.take_encoded(EncodedMessage(message), self.now)
            if data is not None:
                self.on_wire.add(msg_id)
                self.wire.append(("rx", data))
        else:
            msg_id = self.tx.send_encoded(EncodedMessage(message), self.now)
        self.sent[msg_id] = self.bid
        self._pump()

    @rule(online=st.booleans())
    def go(self, online: bool) -> None:
        self.online = online
        if online:
            self.tx.retransmit_now(self.now)
        self._pump()

    @precondition(lambda self: self.sent)
    @rule(picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
    def withdraw(self, picks: list[int]) -> None:
        ids = sorted(self.sent)
        chosen = {ids[p % len(ids)] for p in picks}
        done = self.tx.withdraw(chosen, self.now)
        assert done <= chosen
        assert not done & self.on_wire, "a message that left was taken back"
        assert not done & self.withdrawn
        self.withdrawn |= done
        self._pump()

    @precondition(lambda self: self.wire)
    @rule(pick=st.integers(0, 10**6), keep=st.booleans())
    def deliver(self, pick: int, keep: bool) -> None:
        i = pick % len(self.wire)
        dst, data = self.wire[i] if keep else self.wire.pop(i)
        if dst == "rx":
            self.got += [m.bid for m in self.rx.receive(data, self.now)]  # type: ignore[union-attr]
        else:
            self.tx.receive(data, self.now)
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
    def taken_back_reads_as_acknowledged_and_never_arrives(self) -> None:
        if not hasattr(self, "tx"):
            return
        assert all(self.tx.is_acked(i) for i in self.withdrawn)
        assert not {self.sent[i] for i in self.withdrawn} & set(self.got)
        assert len(self.got) == len(set(self.got))

    def teardown(self) -> None:
        if not hasattr(self, "tx"):
            return
        self.online = True
        self.tx.retransmit_now(self.now)
        for _ in range(400):
            self.now += 0.05
            self._pump()
            while self.wire:
                dst, data = self.wire.pop(0)
                if dst == "rx":
                    self.got += [m.bid for m in self.rx.receive(data, self.now)]  # type: ignore[union-attr]
                else:
                    self.tx.receive(data, self.now)
            if self.tx.next_timeout() is None and self.rx.next_timeout() is None:
                break
        expected = sorted(bid for i, bid in self.sent.items() if i not in self.withdrawn)
        assert sorted(self.got) == expected
        stats = self.tx.statistics()
        assert (stats.in_flight, stats.queued) == (0, 0)


OfflineSender.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
test_an_away_peer_gets_everything_not_taken_back_and_nothing_taken_back = OfflineSender.TestCase
