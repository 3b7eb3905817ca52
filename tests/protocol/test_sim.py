"""The deterministic fake network and virtual clock (loa.protocol.sim)."""

from __future__ import annotations

import pytest

from loa.protocol.sim import FakeNetwork, LinkConditions, VirtualClock

Address = tuple[str, int]
A: Address = ("10.0.0.1", 1)
B: Address = ("10.0.0.2", 2)
C: Address = ("10.0.0.3", 3)


class Recorder:
    """Receives and records; sends whatever the test queues; optional timers at given times."""

    def __init__(self, timers: list[float] | None = None) -> None:
        self.received: list[tuple[float, bytes, Address]] = []
        self.queue: list[tuple[bytes, Address]] = []
        self.timers = sorted(timers or [])
        self.fired: list[float] = []

    def receive(self, data: bytes, src: Address, now: float) -> None:
        self.received.append((now, data, src))

    def outgoing(self) -> list[tuple[bytes, Address]]:
        out, self.queue = self.queue, []
        return out

    def next_timeout(self) -> float | None:
        return self.timers[0] if self.timers else None

    def handle_timeout(self, now: float) -> None:
        while self.timers and self.timers[0] <= now:
            self.timers.pop(0)
            self.fired.append(now)
            self.queue.append((b"tick", B))


def pair(**options: object) -> tuple[FakeNetwork, Recorder, Recorder]:
    net = FakeNetwork(**options)  # type: ignore[arg-type]
    a, b = Recorder(), Recorder()
    net.attach(A, a)
    net.attach(B, b)
    return net, a, b


def send_many(net: FakeNetwork, a: Recorder, count: int, dst: Address = B) -> None:
    a.queue += [(i.to_bytes(4, "big"), dst) for i in range(count)]
    net.run_for(10.0)


def test_virtual_clock() -> None:
    clock = VirtualClock(5.0)
    clock.advance(1.5)
    clock.jump_to(2.0)
    assert clock.now == clock() == 6.5


def test_same_seed_same_run_and_different_seed_different_run() -> None:
    logs = []
    for seed in (7, 7, 8):
        net, a, b = pair(seed=seed, loss=0.3, duplicate=0.1, reorder=0.2)
        send_many(net, a, 200)
        logs.append((b.received, net.statistics()))
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


def test_loss_duplicate_and_delay() -> None:
    net, a, b = pair(seed=1, loss=0.3, duplicate=0.2, delay=(0.05, 0.1))
    send_many(net, a, 5000)
    stats = net.statistics()
    assert stats.sent == 5000
    assert 0.27 < stats.lost / 5000 < 0.33
    assert 0.17 < stats.duplicated / (5000 - stats.lost) < 0.23
    assert stats.delivered == len(b.received) == 5000 - stats.lost + stats.duplicated
    assert all(0.05 <= now <= 0.1 for now, _, _ in b.received)
    assert all(src == A for _, _, src in b.received)


def test_reordering() -> None:
    net, a, b = pair(seed=2, delay=(0.01, 0.01))
    send_many(net, a, 100)
    assert [d for _, d, _ in b.received] == [i.to_bytes(4, "big") for i in range(100)]
    net, a, b = pair(seed=2, reorder=0.5, delay=(0.01, 0.01), reorder_delay=0.2)
    send_many(net, a, 100)
    order = [int.from_bytes(d, "big") for _, d, _ in b.received]
    assert sorted(order) == list(range(100))
    assert order != sorted(order)


def test_per_direction_links_and_wildcards() -> None:
    net, a, b = pair(seed=3)
    net.set_link(A, B, LinkConditions(loss=1.0))
    send_many(net, a, 50)
    assert b.received == []
    b.queue += [(b"back", A)] * 10
    net.run_for(1.0)
    assert len(a.received) == 10
    net.set_link(None, A, LinkConditions(loss=1.0))
    b.queue += [(b"back", A)] * 10
    net.run_for(1.0)
    assert len(a.received) == 10


def test_outage() -> None:
    net, a, b = pair(seed=4, delay=(0.001, 0.001))
    net.add_outage(1.0, 2.0, dst=B)
    for _ in range(12):
        a.queue.append((b"x", B))
        net.run_for(0.25)
    assert [round(now, 3) for now, _, _ in b.received] == [0.001, 0.251, 0.501, 0.751, 2.001, 2.251, 2.501, 2.751]
    assert net.statistics().lost == 4


def test_move_and_undeliverable() -> None:
    net, a, b = pair(seed=5, delay=(0.5, 0.5))
    a.queue.append((b"in flight", B))
    net.flush()
    net.move(B, C)
    net.run_for(1.0)
    assert b.received == []
    assert net.statistics().undeliverable == 1
    b.queue.append((b"from the new address", A))
    net.run_for(1.0)
    assert a.received[0][2] == C
    with pytest.raises(ValueError, match="already attached"):
        net.attach(A, b)


def test_timers_jump_the_clock() -> None:
    net = FakeNetwork(seed=6, delay=(0.0, 0.0))
    ticker, sink = Recorder([1.0, 30.0, 3600.0]), Recorder()
    net.attach(A, ticker)
    net.attach(B, sink)
    assert not net.run_until(lambda: len(sink.received) == 3, 100.0)
    assert net.now == 100.0
    assert ticker.fired == [1.0, 30.0]
    assert net.run_until(lambda: len(sink.received) == 3, 4000.0)
    assert net.now == 3600.0
    assert [now for now, _, _ in sink.received] == [1.0, 30.0, 3600.0]


def test_inject_and_taps() -> None:
    net, a, b = pair(seed=7)
    seen: list[tuple[Address, Address, bytes]] = []
    net.taps.append(lambda _now, src, dst, data: seen.append((src, dst, data)))
    net.inject(b"spoofed", C, B)
    a.queue.append((b"real", B))
    net.run_for(1.0)
    assert seen == [(C, B, b"spoofed"), (A, B, b"real")]
    assert sorted((d, s) for _, d, s in b.received) == [(b"real", A), (b"spoofed", C)]


def test_a_timer_stuck_in_the_past_is_reported() -> None:
    class Stuck(Recorder):
        def next_timeout(self) -> float | None:
            return 0.0

    net = FakeNetwork(max_steps=100)
    net.attach(A, Stuck())
    with pytest.raises(RuntimeError, match="no progress"):
        net.run_for(1.0)
