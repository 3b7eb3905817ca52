"""The device's view of server time (devices/frame.py, ServerClock; PROTOCOL.md section 4.7, "Slewing"): small
corrections of the clock estimate are slewed at ``SLEW_RATE``, large ones stepped, and both conversions stay each
other's inverse. Everything runs on a real ClockEstimator fed four-timestamp exchanges with chosen offsets and
delays, in virtual time.

An exchange taken in at device time ``t`` with offset ``θ`` and round trip ``d`` bounds the offset to
``[θ - d/2, θ + d/2]``; while the estimator's window spans less than 10 s its drift is 0 and its offset the middle
of the tightest bounds, so an exchange at ``θ + δ`` after a run at ``θ`` (same ``d``, ``δ < d``) moves the estimate
by exactly ``δ/2``.
"""

from __future__ import annotations

import itertools

from hypothesis import event, given, settings
from hypothesis import strategies as st

from loa.devices.frame import NS, SLEW_RATE, STEP_LIMIT_NS, ServerClock
from loa.protocol.clock import MIN_SAMPLES

OFFSET = 5 * NS  # server time minus device clock
FRAME_NS = 20_000_000
FRAME = FRAME_NS / NS


def exchange(clock: ServerClock, local: float, offset: int, delay: int) -> bool:
    """Feed one exchange centred on device time ``local`` (s), taken in at ``local`` too."""
    t1 = round(local * NS) - delay // 2
    t2 = t1 + offset + delay // 2
    return clock.add(t1, t2, t2, t1 + delay, local)


def ready_clock(delay: int = 2_000_000, *, ahead: float = 0.0) -> ServerClock:
    """A clock made ready by ``MIN_SAMPLES`` exchanges at ``OFFSET``, 0.25 s apart (device times 0 - 1.75 s)."""
    clock = ServerClock(ahead=ahead)
    for i in range(MIN_SAMPLES):
        assert not clock.ready
        assert exchange(clock, 0.25 * i, OFFSET, delay)
    assert clock.ready
    return clock


def estimate_local(clock: ServerClock, server_ns: int) -> float:
    return clock.estimator.to_local(server_ns) / NS


def local_of(clock: ServerClock, server_ns: int) -> float:
    at = clock.to_local(server_ns)
    assert at is not None
    return at


def server_of(clock: ServerClock, local: float) -> int:
    server = clock.to_server(local)
    assert server is not None
    return server


def residual_of(clock: ServerClock, local: float) -> float:
    residual = clock.residual(local)
    assert residual is not None
    return residual


def played(clock: ServerClock, first_server: int, count: int) -> list[float]:
    """Device instants of ``count`` consecutive 20 ms frames from server time ``first_server``."""
    return [local_of(clock, first_server + k * FRAME_NS) for k in range(count)]


def test_the_first_estimate_is_taken_at_once() -> None:
    clock = ServerClock()
    for i in range(MIN_SAMPLES - 1):
        exchange(clock, 0.25 * i, OFFSET, 2_000_000)
        assert clock.to_local(OFFSET) is None
        assert clock.to_server(1.0) is None
    exchange(clock, 1.75, OFFSET, 2_000_000)
    assert (clock.steps, clock.slews) == (1, 0)
    assert clock.to_local(OFFSET + 3 * NS) == 3.0  # exactly the estimate: no residual
    assert clock.residual(3.0) == 0.0


def test_a_small_correction_moves_each_frame_by_at_most_the_slew_rate_and_converges() -> None:
    clock = ready_clock()
    first = OFFSET + 2 * NS  # the frame at device time 2.0 s
    before = played(clock, first, 40)
    assert before == [(2 * NS + k * FRAME_NS) / NS for k in range(40)]
    assert exchange(clock, 2.0, OFFSET + 200_000, 2_000_000)  # backward bounds up 200 us: the estimate by 100 us
    jump = estimate_local(clock, first) - 2.0
    assert abs(jump + 100e-6) < 2e-9  # what the frames would have jumped by without slewing: 5 frames' worth
    assert (clock.steps, clock.slews) == (1, 1)
    after = played(clock, first, 40)
    assert abs(after[0] - 2.0) < 2e-9  # the presented mapping stays where it was at the instant of the exchange
    spacing = [b - a for a, b in itertools.pairwise(after)]
    assert all(abs(s - FRAME) <= SLEW_RATE * FRAME + 2e-9 for s in spacing)
    assert min(spacing) < FRAME - 0.9 * SLEW_RATE * FRAME  # it does slew at the full rate
    # converged after |r| / rate = 100 us / 500 ppm = 0.2 s: ten frames, then exactly the estimate
    settled = [k for k in range(40) if abs(after[k] - estimate_local(clock, first + k * FRAME_NS)) < 2e-9]
    assert settled == list(range(10, 40))
    assert abs(after[5] - estimate_local(clock, first + 5 * FRAME_NS) - 50e-6) < 2e-9  # half way after 0.1 s
    assert abs(residual_of(clock, 2.0) - 100e-6) < 2e-9


def test_the_presented_mapping_is_pinned_at_the_lead_of_the_output() -> None:
    clock = ready_clock(ahead=0.1)
    assert exchange(clock, 2.0, OFFSET - 200_000, 2_000_000)  # the estimate moves by +100 us of device time
    assert abs(local_of(clock, OFFSET + round(2.1 * NS)) - 2.1) < 2e-9  # frames up to 2.1 s may be with the sink
    assert abs(local_of(clock, OFFSET + 2 * NS) - 2.0) < 2e-9  # before the pin: unmoved
    assert abs(local_of(clock, OFFSET + round(2.2 * NS)) - (2.2 + SLEW_RATE * 0.1)) < 2e-9


def test_a_correction_above_the_step_limit_is_stepped() -> None:
    clock = ready_clock(delay=10_000_000)  # bounds 5 ms either side
    assert exchange(clock, 2.0, OFFSET + 5_000_000, 2_000_000)  # tighter backward bound: the estimate moves 4.5 ms
    jump = estimate_local(clock, OFFSET + 2 * NS) - 2.0
    assert abs(jump + 4.5e-3) < 2e-9
    assert abs(jump) * NS > STEP_LIMIT_NS
    assert (clock.steps, clock.slews) == (2, 0)
    assert clock.to_local(OFFSET + 2 * NS) == estimate_local(clock, OFFSET + 2 * NS)


def test_a_restart_of_the_estimator_is_stepped() -> None:
    clock = ready_clock()
    for i in range(3):  # the server's clock stepped by 50 ms: three suspects in a row restart the estimator
        exchange(clock, 2.0 + 0.25 * i, OFFSET + 50_000_000, 2_000_000)
    assert clock.estimator.statistics().resets == 1
    assert not clock.ready
    assert clock.to_local(OFFSET) is None
    for i in range(3, MIN_SAMPLES):
        exchange(clock, 2.0 + 0.25 * i, OFFSET + 50_000_000, 2_000_000)
    assert clock.ready
    assert (clock.steps, clock.slews) == (2, 0)
    assert local_of(clock, OFFSET + 50_000_000 + 4 * NS) == 4.0


def test_to_server_inverts_to_local_before_during_and_after_a_slew() -> None:
    for delta in (200_000, -200_000, 3_900_000, -3_900_000):  # estimate moves of 100 us and 1.95 ms, both ways
        clock = ready_clock(delay=4_000_000)
        exchange(clock, 2.0, OFFSET + delta, 4_000_000)
        assert clock.slews == 1
        for k in range(-100, 600):
            server = OFFSET + 2 * NS + k * 7_777_777  # 7.8 ms apart: from 0.8 s before the slew to 4.7 s after
            local = local_of(clock, server)
            assert abs(server_of(clock, local) - server) <= 1_000
            assert abs(clock.to_server_any(local) - server) <= 1_000
            assert abs(local_of(clock, server_of(clock, local)) - local) <= 1e-6


def test_to_server_any_works_before_the_estimate_is_ready() -> None:
    clock = ServerClock()
    assert clock.to_server_any(1.5) == round(1.5 * NS)  # no exchange yet: the device clock itself
    exchange(clock, 0.0, OFFSET, 2_000_000)
    assert clock.to_server_any(1.5) == OFFSET + round(1.5 * NS)


# one step of the property test: device seconds to the next exchange, a change of the true offset (ns), the
# exchange's round trip (ns), and whether the answer took the least delay (a tight bound) or was queued
steps = st.lists(st.tuples(st.floats(0.05, 3.0), st.integers(-3_000_000, 3_000_000), st.integers(0, 20_000_000),
                           st.booleans()), min_size=MIN_SAMPLES, max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps, st.floats(-100.0, 100.0), st.sampled_from([0.0, 0.04, 0.1]))
def test_the_presented_mapping_never_moves_faster_than_the_rate_except_at_a_step(
    sequence: list[tuple[float, int, int, bool]], drift_ppm: float, ahead: float
) -> None:
    clock = ServerClock(ahead=ahead)
    now, offset = 0.0, OFFSET
    ahead_ns = round(ahead * NS)
    for gap, change, delay, tight in sequence:
        now += gap
        offset += change
        pin = round(now * NS) + ahead_ns
        was_ready, old_steps = clock.ready, clock.steps
        before = clock.to_server(pin / NS) if clock.ready else None
        true_offset = offset + round(drift_ppm * 1e-6 * now * NS)
        if not exchange(clock, now, true_offset + (0 if tight else delay // 3), delay) or not clock.ready:
            continue
        stepped = clock.steps != old_steps
        if was_ready and not stepped:  # slewed: the mapping did not move at the pin
            assert before is not None
            assert abs(server_of(clock, pin / NS) - before) <= 3
        server_pin = server_of(clock, pin / NS)
        for k in range(-50, 250, 9):  # 20 ms frames from 1 s before the pin to 5 s after
            server = server_pin + k * FRAME_NS
            here, there = local_of(clock, server), local_of(clock, server + FRAME_NS)
            presented = round((there - here) * NS)
            estimated = clock.estimator.to_local(server + FRAME_NS) - clock.estimator.to_local(server)
            assert abs(presented - estimated) <= SLEW_RATE * estimated + 3  # moves at most at the rate
            residual = round(here * NS) - clock.estimator.to_local(server)
            assert abs(residual) <= STEP_LIMIT_NS + 1  # never further from the estimate than the limit
            if stepped:
                assert residual == 0
            assert abs(server_of(clock, here) - server) <= 1_000
        # converged |r| / rate after the pin (of the estimate's device time: |r| more or less of the device's)
        left = abs(residual_of(clock, pin / NS))
        done = pin / NS + left / SLEW_RATE + left + 1e-8
        assert clock.residual(done) == 0.0
    event(f"slewed {min(clock.slews, 3)}+, stepped {min(clock.steps, 3)}+")  # what the examples exercised
