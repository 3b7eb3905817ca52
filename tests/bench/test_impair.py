"""The impairment logic without sockets: channel decisions on a fake clock, the delay heap, the kernel rules."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.bench import impair
from loa.bench.faults import parse_scenario
from loa.bench.impair import Channel, DelayQueue, Impairment, KernelFaultError, KernelFaults, kernel_support


def channel(seed: int = 1, **options: float) -> Channel:
    return Channel(Impairment(**options), random.Random(seed))


def run(ch: Channel, count: int, step: float = 0.02) -> list[list[float]]:
    """Route ``count`` datagrams arriving every ``step`` seconds from t=0; the departure times of each."""
    return [ch.route(i * step) for i in range(count)]


@pytest.mark.parametrize(("options", "word"), [
    ({"loss": 1.0}, "loss"), ({"loss": -0.1}, "loss"), ({"duplicate": 1.5}, "duplicate"),
    ({"reorder": float("nan")}, "reorder"), ({"burst": 0.5}, "burst"), ({"jitter": 2.0}, "jitter"),
    ({"delay": -0.001}, "delay"), ({"delay": 5.5}, "delay"), ({"reorder_gap": 5.0}, "reorder_gap"),
])
def test_bad_parameters_are_refused_by_name(options: dict[str, float], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        Impairment(**options)


def test_a_perfect_channel_forwards_everything_at_once() -> None:
    ch = channel()
    assert Impairment().perfect
    assert run(ch, 100) == [[i * 0.02] for i in range(100)]
    assert (ch.counts.dropped, ch.counts.duplicated, ch.counts.blocked) == (0, 0, 0)


def test_one_seed_one_run_and_another_seed_another() -> None:
    options = {"loss": 0.2, "jitter": 0.05, "duplicate": 0.1, "reorder": 0.1}
    assert run(channel(7, **options), 500) == run(channel(7, **options), 500)
    assert run(channel(7, **options), 500) != run(channel(8, **options), 500)


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.1, 0.2, 0.3])
def test_random_loss_is_near_its_rate_and_independent(loss: float) -> None:
    ch = channel(3, loss=loss)
    out = run(ch, 20_000)
    lost = [not o for o in out]
    assert abs(sum(lost) / len(lost) - loss) < 4 * (loss * (1 - loss) / len(lost)) ** 0.5 + 1e-3
    # independent: a loss right after a loss is as likely as any loss
    after = [b for a, b in itertools.pairwise(lost) if a]
    assert abs(sum(after) / len(after) - loss) < 0.05


def test_bursts_have_their_mean_length_and_long_run_rate() -> None:
    ch = channel(4, loss=0.2, burst=3.0)
    lost = [not o for o in run(ch, 50_000)]
    bursts, length = [], 0
    for gone in lost:
        if gone:
            length += 1
        elif length:
            bursts.append(length)
            length = 0
    assert abs(sum(lost) / len(lost) - 0.2) < 0.02
    assert abs(statistics.mean(bursts) - 3.0) < 0.3


def test_jitter_delays_within_its_bounds_and_reorders() -> None:
    ch = channel(5, delay=0.01, jitter=0.2)
    out = run(ch, 2_000)
    delays = [o[0] - i * 0.02 for i, o in enumerate(out)]
    assert min(delays) >= 0.01
    assert max(delays) <= 0.21 + 1e-9
    assert max(delays) > 0.19  # the range is used
    departures = [o[0] for o in out]
    assert departures != sorted(departures)  # 200 ms of jitter on 20 ms spacing reorders


def test_reordering_holds_back_its_share_by_the_gap() -> None:
    ch = channel(6, reorder=0.1, reorder_gap=0.05)
    delays = [o[0] - i * 0.02 for i, o in enumerate(run(ch, 10_000))]
    held = [d for d in delays if d > 0]
    assert all(d == pytest.approx(0.05) for d in held)
    assert abs(len(held) / len(delays) - 0.1) < 0.015


def test_duplicates_are_second_copies_counted_once() -> None:
    ch = channel(7, duplicate=0.2, jitter=0.01)
    out = run(ch, 10_000)
    doubled = [o for o in out if len(o) == 2]
    assert all(len(o) in (1, 2) for o in out)
    assert abs(len(doubled) / len(out) - 0.2) < 0.02
    assert ch.counts.duplicated == len(doubled)
    assert all(o == sorted(o) for o in doubled)


def test_an_outage_blocks_its_window_only() -> None:
    ch = channel(8)
    ch.outage(1.0, 4.0)
    out = run(ch, 300)  # 0 .. 5.98 s
    blocked = [i * 0.02 for i, o in enumerate(out) if not o]
    assert blocked[0] == pytest.approx(1.0)
    assert blocked[-1] == pytest.approx(3.98)
    assert len(blocked) == ch.counts.blocked == 150
    assert ch.outages == []  # forgotten once over
    with pytest.raises(ValueError, match="end after"):
        ch.outage(5.0, 4.0)


def test_a_new_impairment_applies_from_the_next_datagram() -> None:
    ch = channel(9)
    assert all(run(ch, 100))
    ch.set(Impairment(loss=0.5, burst=4.0))
    assert not all(run(ch, 100))
    ch.set(Impairment())
    assert all(run(ch, 100))


@given(st.lists(st.tuples(st.floats(0, 10, allow_nan=False), st.integers()), max_size=60),
       st.floats(0, 12, allow_nan=False))
def test_the_delay_queue_gives_what_is_due_first_due_first(items: list[tuple[float, int]], now: float) -> None:
    queue: DelayQueue[int] = DelayQueue()
    for index, (at, _) in enumerate(items):
        queue.push(at, index)
    expected = [i for i, (at, _) in sorted(enumerate(items), key=lambda p: (p[1][0], p[0])) if at <= now]
    assert queue.pop_due(now) == expected
    rest = [at for at, _ in items if at > now]
    assert len(queue) == len(rest)
    assert queue.next_deadline() == (min(rest) if rest else None)


class FakeNft:
    """Records the commands; answers ``nft list`` with a canned listing."""

    def __init__(self, listing: str = "") -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.listing = listing

    def __call__(self, args: list[str], stdin: str | None = None) -> str:
        self.calls.append((args, stdin))
        return self.listing if args[:2] == ["nft", "list"] else ""


def test_kernel_rules_are_one_atomic_script_per_change() -> None:
    nft = FakeNft()
    faults = KernelFaults(4433, run=nft)
    faults.loss(0.1)
    script = nft.calls[-1][1]
    assert nft.calls[-1][0] == ["nft", "-f", "-"]
    assert script is not None
    assert "udp dport 4433 numgen random mod 1000 < 100 counter drop" in script
    assert "udp sport 4433 numgen random mod 1000 < 100 counter drop" in script
    assert "hook input" in script  # an output drop would fail the sender's sendto with EPERM
    faults.block("down")
    script = nft.calls[-1][1]
    assert script is not None
    assert "udp sport 4433 counter drop" in script
    assert "udp sport 4433 numgen" not in script
    assert "udp dport 4433 numgen random mod 1000 < 100 counter drop" in script  # the other way keeps its loss
    faults.unblock("down")
    faults.clear()
    script = nft.calls[-1][1]
    assert script is not None
    assert "drop" not in script
    with pytest.raises(ValueError, match="loss"):
        faults.loss(1.0)
    with pytest.raises(ValueError, match="direction"):
        faults.block("sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        KernelFaults(4433, backend="iptables", run=nft)


def test_kernel_counts_are_read_from_the_rule_counters() -> None:
    listing = """table inet loa_faults {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 4433 counter packets 1000 bytes 9
		udp dport 4433 numgen random mod 1000 < 100 counter packets 98 bytes 9 drop
		udp sport 4433 counter packets 2000 bytes 9
		udp sport 4433 counter packets 2000 bytes 9 drop
		udp sport 5000 counter packets 7 bytes 9
	}
}"""
    faults = KernelFaults(4433, run=FakeNft(listing))
    assert faults.counts() == {"up": (1000, 98), "down": (2000, 2000)}


def test_kernel_support_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impair.os, "geteuid", lambda: 1000)
    backend, why = kernel_support()
    assert backend is None
    assert "root" in why
    monkeypatch.setattr(impair.os, "geteuid", lambda: 0)
    monkeypatch.setattr(impair.shutil, "which", lambda name: f"/usr/sbin/{name}")

    def no_netem(args: list[str]) -> str:
        if "netem" in args[-1]:
            raise KernelFaultError("tc: Specified qdisc kind is unknown.")
        return ""

    assert kernel_support(no_netem)[0] == "nft"
    assert kernel_support(lambda _args: "")[0] == "netem"

    def no_nft(args: list[str]) -> str:
        raise KernelFaultError("nft: Operation not permitted")

    backend, why = kernel_support(no_nft)
    assert backend is None
    assert "nftables" in why
    monkeypatch.setattr(impair.shutil, "which", lambda name: None if name == "nft" else f"/usr/sbin/{name}")
    backend, why = kernel_support(lambda _args: "")
    assert backend is None
    assert "apt-get install nftables" in why


def test_fault_scenarios_are_made_from_their_names() -> None:
    assert parse_scenario("slow1500").impairment == Impairment(delay=1.5)
    assert parse_scenario("jitter200").impairment == Impairment(jitter=0.2)
    assert parse_scenario("outage_down_5s").outage == ("down", 5.0)
    with pytest.raises(ValueError, match="slow6000: delay must be 0 to 5 s"):
        parse_scenario("slow6000")
    with pytest.raises(ValueError, match="slowN"):
        parse_scenario("slow")
