"""Case 4.7.1's rate rule: counted on the device's send times, proof against the kit's arrival jitter, and not
fooled by stretched ``t1`` values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loa.devices.conformance.cases.control import PROBES_PER_SECOND, T1_TRACKING_S, probe_rate

NS = 1_000_000_000


def _t1(sends: list[float], drift_ppm: float = 0.0) -> list[int]:
    return [round(s * (1 + drift_ppm * 1e-6) * NS) for s in sends]


@given(st.lists(st.floats(0.0, 0.2), min_size=2, max_size=20), st.lists(st.floats(0.0, 0.2), min_size=21,
       max_size=21), st.floats(-100.0, 100.0), st.floats(0.0, 1000.0))
def test_an_honest_four_per_second_device_passes_with_arrivals_up_to_200_ms_late(
        lateness: list[float], jitter: list[float], drift_ppm: float, start: float) -> None:
    # each probe is due 0.25 s after the previous one went, and its timer fires up to 0.2 s late
    sends = [start]
    for late in lateness:
        sends.append(sends[-1] + 0.25 + late)
    arrivals = [s + 0.003 + jitter[i] for i, s in enumerate(sends)]
    rate, tracking = probe_rate(_t1(sends, drift_ppm), arrivals)
    assert rate <= PROBES_PER_SECOND
    assert tracking <= T1_TRACKING_S


def test_bunched_arrivals_alone_do_not_fail_a_device() -> None:
    sends = [0.25 * i for i in range(16)]
    arrivals = [s + (0.06 if i % 8 == 0 else 0.0) for i, s in enumerate(sends)]  # 5 arrivals within 0.94 s
    assert max(sum(1 for u in arrivals if t <= u < t + 0.95) for t in arrivals) == 5
    assert probe_rate(_t1(sends), arrivals) == (4, 0.0)


@given(st.floats(0.05, 0.245), st.integers(5, 40), st.floats(0.0, 1000.0))
def test_a_device_probing_faster_is_caught_on_its_own_clock(period: float, count: int, start: float) -> None:
    sends = [start + period * i for i in range(count)]
    rate, _ = probe_rate(_t1(sends), [s + 0.01 for s in sends])
    assert rate > PROBES_PER_SECOND


@given(st.floats(0.05, 0.22), st.lists(st.floats(0.0, 0.1), min_size=81, max_size=81))
def test_a_device_stretching_t1_to_hide_its_rate_is_caught(period: float, jitter: list[float]) -> None:
    count = int(4.0 / period) + 1  # the case's 4 s of probing
    sends = [period * i for i in range(count)]
    faked = [round(0.25 * i * NS) for i in range(count)]  # t1 as an honest 4-per-second device would stamp it
    rate, tracking = probe_rate(faked, [s + jitter[i] for i, s in enumerate(sends)])
    assert rate <= PROBES_PER_SECOND
    assert tracking > T1_TRACKING_S


def test_one_probe_or_none() -> None:
    assert probe_rate([], []) == (0, 0.0)
    assert probe_rate([5 * NS], [1.0]) == (1, 0.0)
