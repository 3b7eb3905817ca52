"""The device's clock-probe schedule (devices/probing.py, PROTOCOL.md section 4.7)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from loa.devices.frame import NS, ServerClock
from loa.devices.probing import (
    FAST_PROBE_S,
    PROBES_BEFORE_REHANDSHAKE,
    SILENCE_BEFORE_REHANDSHAKE_S,
    SILENCE_ROUND_TRIPS,
    SUSPECT_AFTER_S,
    ClockProbe,
)
from loa.protocol.control import TimeResp


def _answer_all(probe: ClockProbe, start: float, until_ready: bool, limit: int = 100) -> list[float]:
    """Probe and answer at once (a server 1 s ahead, 2 ms away) until the estimate is ready; the send times."""
    sent: list[float] = []
    now = start
    probe.connected(now)
    while len(sent) < limit and not (until_ready and probe.clock.ready):
        request = probe.due(now)
        assert request is not None
        sent.append(now)
        server = round((now + 1.001) * NS)
        probe.answer(TimeResp(t1=request.t1, t2=server, t3=server), now + 0.002)
        assert probe.next_at is not None
        now = probe.next_at
    return sent


def test_a_decoding_device_probes_four_times_a_second_until_ready_then_once() -> None:
    probe = ClockProbe(ServerClock())
    sent = _answer_all(probe, 10.0, until_ready=True)
    assert probe.clock.ready
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(sent)}
    assert gaps == {FAST_PROBE_S}
    assert probe.interval() == 1.0


def test_a_counting_device_probes_on_the_base_schedule_from_the_start() -> None:
    probe = ClockProbe(ServerClock(), fast=False)
    sent = _answer_all(probe, 10.0, until_ready=True)
    assert probe.clock.ready
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(sent)}
    assert gaps == {1.0}
    assert len(sent) == len(_answer_all(ClockProbe(ServerClock()), 10.0, until_ready=True))  # as many exchanges


def test_t4_is_the_arrival_instant_when_the_host_knows_it() -> None:
    """A time_resp handled 0.4 s after it arrived: with its arrival instant the exchange's delay is the path's,
    without it the wait counts as delay (and such exchanges never pass the minimum-delay filter together)."""
    late, stamped = ClockProbe(ServerClock()), ClockProbe(ServerClock())
    for probe, t4_at in ((late, None), (stamped, 10.002)):
        probe.connected(10.0)
        request = probe.due(10.0)
        assert request is not None
        server = round(11.001 * NS)
        probe.answer(TimeResp(t1=request.t1, t2=server, t3=server), 10.402, t4_at=t4_at)
    assert round(late.rtt, 3) == 0.402
    assert round(stamped.rtt, 3) == 0.002


def _steady(start: float) -> tuple[ClockProbe, float]:
    """A probe past its first 60 exchanges (one every 5 s); returns it and the time its next probe is due."""
    probe = ClockProbe(ServerClock())
    _answer_all(probe, start, until_ready=False, limit=80)
    assert probe.interval() == 5.0
    assert probe.next_at is not None
    return probe, probe.next_at


def test_answered_probes_keep_the_five_second_schedule() -> None:
    probe, now = _steady(10.0)
    sent = _answer_all_from(probe, now, count=5)
    assert {round(b - a, 6) for a, b in itertools.pairwise(sent)} == {5.0}


def test_a_silent_server_is_noticed_within_about_three_seconds_on_the_five_second_schedule() -> None:
    """Section 7.6: the device re-handshakes after 3 unanswered probes over >= 3 s; an unanswered probe brings the
    next one forward to SUSPECT_AFTER_S (or 2 x RTT), so the 5 s schedule does not stretch this to 10-15 s."""
    probe, now = _steady(10.0)
    sent: list[float] = []
    for _ in range(10):
        if probe.due(now) is None:  # the server is silent: handshake again
            break
        sent.append(now)
        assert probe.next_at is not None
        now = probe.next_at
    assert len(sent) == PROBES_BEFORE_REHANDSHAKE
    assert probe.silences == 1
    assert {round(b - a, 6) for a, b in itertools.pairwise(sent)} == {SUSPECT_AFTER_S}
    assert round(now - sent[0], 6) == 3.0  # noticed 3 s after the first unanswered probe, 8 s after the last answer


def test_a_late_answer_only_costs_one_early_probe() -> None:
    probe, now = _steady(10.0)
    request = probe.due(now)
    assert request is not None
    early = probe.next_at
    assert early is not None
    assert round(early - now, 6) == SUSPECT_AFTER_S
    again = probe.due(early)  # the answer is late: the next probe leaves after SUSPECT_AFTER_S
    assert again is not None
    server = round((early + 0.5 + 1.001) * NS)
    probe.answer(TimeResp(t1=again.t1, t2=server, t3=server), early + 0.5)
    assert probe.next_at is not None
    assert round(probe.next_at - early, 6) == 5.0


def _answer_all_from(probe: ClockProbe, now: float, *, count: int) -> list[float]:
    """``count`` probes from ``now`` on, each answered 2 ms later; their send times."""
    sent: list[float] = []
    for _ in range(count):
        request = probe.due(now)
        assert request is not None
        sent.append(now)
        server = round((now + 1.001) * NS)
        probe.answer(TimeResp(t1=request.t1, t2=server, t3=server), now + 0.002)
        assert probe.next_at is not None
        now = probe.next_at
    return sent


@settings(max_examples=50, deadline=None)
@given(rtt=st.floats(0.0, 9.0), fast=st.booleans())
def test_a_silent_server_is_one_that_stays_silent_for_two_handshake_round_trips(rtt: float, fast: bool) -> None:
    """Before any probe is answered the round trip is the handshake's: the device gives up on the server after 3
    unanswered probes and max(3 s, 2 x that round trip) of silence, not sooner (an answer could still come), and
    not much later (the next probe's due time)."""
    probe = ClockProbe(ServerClock(), fast=fast)
    probe.connected(10.0, rtt=rtt)
    assert probe.rtt == rtt
    silence = max(SILENCE_BEFORE_REHANDSHAKE_S, SILENCE_ROUND_TRIPS * rtt)
    now, sent = 10.0, 0
    while probe.due(now) is not None:
        sent += 1
        assert probe.next_at is not None
        now = probe.next_at
    assert sent >= PROBES_BEFORE_REHANDSHAKE
    assert silence <= now - 10.0 <= silence + probe.interval()


@settings(max_examples=50, deadline=None)
@given(one_way=st.floats(0.001, 4.5), rounds=st.integers(3, 100))
def test_an_answer_within_the_round_trip_keeps_the_session(one_way: float, rounds: int) -> None:
    """On a path as slow as the handshake found it, every answer comes before the device would give up: each
    probe's answer arrives one round trip after it left (handed over before the timers of that instant), and the
    device never takes the server for silent."""
    probe = ClockProbe(ServerClock(), fast=False)
    probe.connected(10.0, rtt=2 * one_way)
    arrivals: list[tuple[float, int]] = []  # (when, t1), in order
    for _ in range(rounds):
        now = probe.next_at
        assert now is not None
        while arrivals and arrivals[0][0] <= now:
            at, t1 = arrivals.pop(0)
            server = round((at - one_way + 1.0) * NS)
            probe.answer(TimeResp(t1=t1, t2=server, t3=server), at)
            now = max(now, probe.next_at or now)
        request = probe.due(now)
        assert request is not None, f"taken for silent at {now - 10.0:.3f} s"
        arrivals.append((now + 2 * one_way, request.t1))


def test_answers_to_probes_sent_before_a_rekey_still_count() -> None:
    """A new session (a rekey) keeps the probes already sent: the answer to one counts, not as stale."""
    probe = ClockProbe(ServerClock(), fast=False)
    probe.connected(10.0)
    request = probe.due(10.0)
    assert request is not None
    probe.connected(10.5, rtt=0.3)  # the rekey's response
    server = round(11.8 * NS)
    probe.answer(TimeResp(t1=request.t1, t2=server, t3=server), 10.6)
    assert probe.stale == 0
    assert probe.clock.estimator.statistics().accepted == 1


def test_a_path_that_slowed_is_judged_by_the_latest_handshake() -> None:
    """The probes' smoothed round trip lags a path that just slowed: after answers within 2 ms, a rekey whose
    handshake took 4 s sets how long the silence must last (8 s), not the 3 s the probes would give."""
    probe, now = _steady(10.0)
    assert probe.rtt < 0.01
    probe.connected(now, rtt=4.0)
    start = now
    while probe.due(now) is not None:
        assert probe.next_at is not None
        now = probe.next_at
    assert now - start >= SILENCE_ROUND_TRIPS * 4.0


@given(handled_after=st.floats(0.0, 120.0), arrived_after=st.floats(0.001, 20.0))
def test_an_answer_counts_by_when_it_arrived_not_when_it_was_handled(handled_after: float,
                                                                     arrived_after: float) -> None:
    """A host that handles a time_resp long after the kernel stamped it (a busy fleet process) still counts it when
    it arrived within 10 s of the probe, and the server is not taken for silent; one that arrived later is stale
    however soon it is handled. Without the stamp, the handling time is all the device has."""
    for stamped in (True, False):
        probe = ClockProbe(ServerClock())
        probe.connected(100.0)
        request = probe.due(100.0)
        assert request is not None
        arrived = 100.0 + arrived_after
        now = arrived + handled_after
        server = round((100.0 + arrived_after / 2 + 1.0) * NS)
        probe.answer(TimeResp(t1=request.t1, t2=server, t3=server), now, t4_at=arrived if stamped else None)
        came_in_time = (arrived if stamped else now) - 100.0 <= 10.0
        assert probe.stale == (0 if came_in_time else 1)
        if came_in_time:
            assert abs(probe.rtt - (arrived_after if stamped else now - 100.0)) < 1e-6
            assert probe._unanswered == 0
        else:
            assert probe._unanswered == 1
