"""`loa bench soak`: its verdicts from samples, its options, and a scaled-down run of the real thing (30 devices,
a real `loa serve` and fleet process, ~40 s) that fails when any of the bench's own goals is missed."""

from __future__ import annotations

import base64
import json
import math
import os
import random
import socket
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from loa.bench._report import read_status
from loa.bench._soak_fleet import ARRIVAL_BIN_S, merge_statuses
from loa.bench._soak_measure import (
    BACK_HANDLED_WAIT_S,
    RESUME_WAIT_S,
    AlertRound,
    Sample,
    follow_alert,
    goals_missed,
    parse_gauges,
    ready_by,
    sample_process,
    time_to_share,
    udp_drops,
    verdicts,
)
from loa.bench._soak_site import (
    START_TIMEOUT_S,
    Api,
    SoakConfig,
    default_fleet_procs,
    fleet_slices,
    seed_site,
    spawn,
    spawn_fleets,
)
from loa.bench.soak import commune_groups, soak
from loa.streamer.core import parse_group


def samples_of(rss: list[int], *, every: float = 10.0, fds: int = 40, tasks: int = 30) -> list[Sample]:
    return [Sample(t=i * every, rss_kib=r, fds=fds, threads=8, cpu_s=float(i), tasks=tasks, sessions=100)
            for i, r in enumerate(rss)]


def test_rss_growth_is_median_to_median_after_the_warmup() -> None:
    config = SoakConfig(devices=100, seconds=300, warmup=60, alert_every=3600)  # no alert cycle fits: minutes
    # 0-50 s: warm-up (ignored), 60-120 s: the first window, 240-300 s: the last one
    rss = [50_000] * 6 + [100_000, 100_000, 101_000, 99_000, 100_000, 250_000, 100_000] + [103_000] * 6
    out = verdicts(samples_of(rss), config)
    assert out["rss_window_s"] == 60
    assert out["rss_warm_mib"] == round(100_000 / 1024, 1)
    assert out["rss_growth_pct"] == 3.0  # the 250 MB spike inside the window does not move a median
    assert out["rss_max_mib"] == round(250_000 / 1024, 1)


def test_short_runs_use_half_of_what_follows_the_warmup() -> None:
    config = SoakConfig(devices=100, seconds=40, warmup=10, alert_every=3600)
    out = verdicts(samples_of([100] * 26 + [110] * 15, every=1.0), config)  # 0..40 s
    assert out["rss_window_s"] == 15
    assert out["rss_growth_pct"] == 10.0


@given(alert_every=st.sampled_from([20.0, 45.0, 60.0, 90.0, 120.0]), more=st.integers(0, 4),
       extra=st.floats(0, 1), warm_cycles=st.integers(1, 3))
def test_with_alerts_the_windows_are_whole_cycles_so_a_burst_does_not_read_as_growth(
        alert_every: float, more: int, extra: float, warm_cycles: int) -> None:
    """Memory that rises for 20 s after each alert and falls back (first alert at half a cycle, as the soak
    schedules them) has grown by nothing, wherever the warm-up and the run end in the cycle, once two windows of
    whole cycles fit after the warm-up."""
    per_window = math.ceil(60 / alert_every)  # cycles
    warmup = warm_cycles * alert_every + extra * alert_every
    seconds = warmup + (2 * per_window + more) * alert_every + extra * alert_every

    def rss(t: float) -> int:
        since = (t - alert_every / 2) % alert_every
        return 400_000 + (40_000 if t >= alert_every / 2 and since < 20 else 0)

    samples = samples_of([rss(i * 5.0) for i in range(math.ceil(seconds / 5) + 1)], every=5.0)  # to >= seconds
    out = verdicts(samples, SoakConfig(devices=100, seconds=seconds, warmup=warmup, alert_every=alert_every))
    assert out["rss_window_s"] == per_window * alert_every
    assert out["rss_growth_pct"] == 0.0


def test_a_minute_window_would_read_the_burst_as_growth() -> None:
    """What the whole-cycle windows fix: with alerts at 60 s, 180 s... a warm-up of 360 s and a run of 960 s, the
    minute after the warm-up is quiet and the last minute follows an alert."""
    def rss(t: float) -> int:
        return 400_000 + (40_000 if (t - 60) % 120 < 50 else 0)

    samples = samples_of([rss(i * 5.0) for i in range(193)], every=5.0)  # 0..960 s
    cycles = verdicts(samples, SoakConfig(devices=100, seconds=960, warmup=360, alert_every=120))
    assert (cycles["rss_window_s"], cycles["rss_growth_pct"]) == (120, 0.0)
    minutes = verdicts(samples, SoakConfig(devices=100, seconds=960, warmup=360, alert_every=3600))
    assert (minutes["rss_window_s"], minutes["rss_growth_pct"]) == (60, 10.0)


def test_interpreter_blocks_are_read_over_the_rss_windows() -> None:
    config = SoakConfig(devices=100, seconds=300, warmup=60, alert_every=3600)
    samples = samples_of([100_000] * 31)
    for sample in samples:  # 1,000,000 blocks in the first window, 1,020,000 in the last; 9 in the warm-up
        sample.gauges = {"loa_python_allocated_blocks": 9.0 if sample.t < 60 else 1e6 + 20_000 * (sample.t >= 240)}
    samples[8].gauges = {}  # a failed scrape counts for nothing
    out = verdicts(samples, config)
    assert (out["py_blocks_warm"], out["py_blocks_end"], out["py_blocks_growth_pct"]) == (1_000_000, 1_020_000, 2.0)
    assert verdicts(samples_of([100] * 31), config)["py_blocks_growth_pct"] is None  # no scrape had the gauge


def test_c_heap_and_sqlite_bytes_are_read_over_the_rss_windows() -> None:
    config = SoakConfig(devices=100, seconds=300, warmup=60, alert_every=3600)
    samples = samples_of([100_000] * 31)
    mib = 2**20
    for sample in samples:  # in use: 80 MiB, then 84 MiB in the last window; SQLite level at 10 MiB
        sample.gauges = {'loa_c_heap_bytes{state="in_use"}': (80 + 4 * (sample.t >= 240)) * mib,
                         'loa_c_heap_bytes{state="free"}': 1e9, "loa_sqlite_bytes": 10 * mib}
    out = verdicts(samples, config)
    assert (out["c_heap_in_use_mib_warm"], out["c_heap_in_use_mib_end"], out["c_heap_in_use_mib_growth_pct"]) == (
        80.0, 84.0, 5.0)
    assert (out["sqlite_mib_warm"], out["sqlite_mib_growth_pct"]) == (10.0, 0.0)


def test_fd_and_task_growth_from_the_end_of_warmup_to_the_end() -> None:
    config = SoakConfig(devices=100, seconds=60, warmup=20)
    samples = samples_of([100] * 7, every=10.0)
    samples[2].fds, samples[2].tasks = 40, 30  # at 20 s
    samples[-1].fds, samples[-1].tasks = 47, 51
    out = verdicts(samples, config)
    assert (out["fd_growth"], out["task_growth"]) == (7, 21)


@pytest.mark.parametrize("seed", range(5))
def test_goals(seed: int) -> None:
    rng = random.Random(seed)
    config = SoakConfig(devices=1000)
    good = {"rss_growth_pct": rng.uniform(-3, 5), "fd_growth": 2, "fd_tolerance": 30, "task_growth": 0,
            "task_tolerance": 28, "sessions_end": 1000, "alerts": 5, "alerts_ready_min_fraction": 1.0,
            "live_back_min_fraction": 0.995, "api_errors": 0, "api_ok": 500}
    assert goals_missed(good, config) == []
    # the shares that reported playing are the fleet's own figures (the simulation's processor), not goals
    assert goals_missed({**good, "alerts_held_min_fraction": 0.5, "live_resumed_min_fraction": 0.5}, config) == []
    for key, bad in [("rss_growth_pct", 5.01), ("fd_growth", 31), ("task_growth", 29), ("sessions_end", 999),
                     ("alerts", 0), ("alerts_ready_min_fraction", 0.98), ("alerts_ready_min_fraction", None),
                     ("live_back_min_fraction", 0.98), ("live_back_min_fraction", None), ("api_errors", 1),
                     ("rss_growth_pct", None)]:
        missed = goals_missed({**good, key: bad}, config)
        assert len(missed) == 1, (key, missed)
        assert key.split("_min")[0] in missed[0] or key == "alerts"


def test_the_live_share_and_rtp_keep_bound_what_is_sent_and_read() -> None:
    small = SoakConfig(devices=30, communes=3)
    assert (small.live_count(), small.live_members(), small.keep(), small.watchdog_ms()) == (3, 30, 1, None)
    full = SoakConfig(devices=10_000, communes=20)
    assert (full.live_count(), full.live_members()) == (2, 1000)  # 50,000 datagrams/s
    assert full.keep() == 4  # 12,500 read
    assert full.watchdog_ms() == 1500
    everyone = SoakConfig(devices=10_000, communes=20, live_communes=20)
    assert (everyone.live_members(), everyone.keep(), everyone.watchdog_ms()) == (10_000, 32, 5120)
    assert SoakConfig(devices=10_000, rtp_keep=64).keep() == 64
    assert SoakConfig(devices=7, communes=3, live_communes=2).live_members() == 5  # devices 0,1,3,4,6


@given(st.lists(st.integers(0, 30), min_size=1, max_size=60))
def test_an_alert_s_half_time_is_its_first_status_with_half_of_the_devices(steps: list[int]) -> None:
    """One fleet status a second from the alert's start, its ``seen`` growing by ``steps``: ``half_s`` is the
    second of the first status in which half of the devices had held the alert, or None if none had by the end."""
    config = SoakConfig(devices=100, seconds=600, warmup=60)
    clock = [1000.0]
    round_ = AlertRound(at=30.0, bid=7, ends_at=1000.0 + config.alert_seconds)
    seen, expected = 0, None
    with mock.patch("loa.bench._soak_measure.time", SimpleNamespace(monotonic=lambda: clock[0])):
        for second, step in enumerate(steps, start=1):
            clock[0] = 1000.0 + second
            seen = min(config.devices, seen + step)
            if expected is None and 2 * seen >= config.devices:
                expected = float(second)
            follow_alert(round_, {"seen": {"7": seen}, "now": {}}, 1, config)
            if round_.resume_s is not None:  # the simulation's figures are read: half_s with them
                break
    assert round_.half_s == expected
    failed = AlertRound(at=30.0, bid=None)
    assert follow_alert(failed, {"seen": {"7": 100}}, 1, config)
    assert failed.half_s is None


@given(st.lists(st.floats(1000.0, 1030.0), max_size=200), st.sampled_from([0.01, 0.1]), st.floats(995.0, 1035.0))
def test_readiness_bins_never_count_a_device_early(times: list[float], bin_s: float, until: float) -> None:
    """A fleet's readiness histogram (``int(t / bin_s)`` bins, as :class:`Readiness` makes them): ``ready_by``
    counts no device whose time is after ``until`` and misses none a whole bin before it; ``time_to_share`` is
    never before the moment the count was reached and at most a bin after it, and None when it never was."""
    bins: dict[str, int] = {}
    for t in times:
        bins[str(int(t / bin_s))] = bins.get(str(int(t / bin_s)), 0) + 1
    eps = 1e-9
    counted = ready_by(bins, bin_s, until)
    assert sum(t <= until + eps for t in times) >= counted >= sum(t <= until - bin_s - eps for t in times)
    since = 1000.0
    for count in (1, 0.5 * len(times), 0.99 * len(times), len(times), len(times) + 1):
        after = time_to_share(bins, bin_s, since, count)
        if count > len(times) or not times:
            assert after is None
            continue
        assert after is not None
        assert sum(t <= since + after + eps for t in times) >= count  # reached by then
        assert sum(t <= since + after - bin_s - eps for t in times) < count  # and not a whole bin earlier


def test_an_alert_s_readiness_is_read_from_the_fleet_when_it_is_done_with() -> None:
    """Of 100 devices, 98 ready by kernel arrival within 0.3 s of the confirmation and one at 9 s, after the
    8-second alert ended: 99 ready in all, 98 of them in time; 99 % were ready 9.01 s after (the end of the 10 ms
    bin), and the fleet had handled half of them 12.1 s after."""
    config = SoakConfig(devices=100, seconds=600, warmup=60)
    confirming = 1000.0
    bins = Counter(str(int((confirming + 0.1 + 0.002 * i) / 0.01)) for i in range(98))
    bins[str(int((confirming + 9.0) / 0.01))] += 1
    arrived = dict(bins)
    handled = {str(int((confirming + 12.05) / 0.1)): 60, str(int((confirming + 20.0) / 0.1)): 39}
    round_ = AlertRound(at=30.0, bid=7, ends_at=confirming + 0.2 + config.alert_seconds, confirming_at=confirming)
    stragglers = {"devices": 1, "sample": [{"device": 41, "connected": False}]}
    status = {"seen": {"7": 90}, "now": {"1": 1000}, "ready_arrived": {"7": arrived}, "ready_handled": {"7": handled},
              "not_ready": {"7": stragglers}}
    with mock.patch("loa.bench._soak_measure.time", SimpleNamespace(monotonic=lambda: confirming + 5.0)):
        assert not follow_alert(round_, status, 1, config)  # the alert still plays: nothing read yet
    assert round_.ready is None
    with mock.patch("loa.bench._soak_measure.time", SimpleNamespace(monotonic=lambda: confirming + 40.0)):
        follow_alert(round_, status, 1, config)
    assert (round_.ready, round_.held) == (98, 90)
    assert round_.ready_p99_s == pytest.approx(9.01, abs=0.006)
    assert round_.handled_p50_s == 12.1
    assert round_.stragglers == stragglers


def test_parse_gauges() -> None:
    text = ("# HELP loa_async_tasks x\n# TYPE loa_async_tasks gauge\nloa_async_tasks 41.0\n"
            'loa_broadcast_late_frames{bid="1002"} 7.0\nprocess_cpu 3\nloa_devices{state="online"} 30.0\n')
    assert parse_gauges(text) == {"loa_async_tasks": 41.0, 'loa_broadcast_late_frames{bid="1002"}': 7.0,
                                  'loa_devices{state="online"}': 30.0}


@pytest.mark.parametrize(("args", "says"), [
    (["--minutes", "1", "--warmup-minutes", "1"], "--warmup-minutes"),
    (["--rtp-keep", "12"], "power of two"),
    (["--readers", "0", "--writers", "0"], "API client"),
])
def test_bad_options_are_one_line(args: list[str], says: str) -> None:
    result = CliRunner().invoke(soak, args)
    assert result.exit_code == 1
    assert says in result.output
    assert "Traceback" not in result.output


def test_an_alert_s_way_back_is_read_once_the_fleet_has_handled_it() -> None:
    """Of the 100 live devices, 98 back on the live stream by kernel arrival 0.4 s after the earliest the alert
    could have ended, one 31 s after its end (too late), and one the fleet has not come round to yet. The count
    waits for that one until BACK_HANDLED_WAIT_S after RESUME_WAIT_S, or for the fleet to have handled them all."""
    config = SoakConfig(devices=100, seconds=600, warmup=60)
    confirming = 1000.0
    ends = confirming + 0.2 + config.alert_seconds
    earliest = confirming + config.alert_seconds
    back = Counter({str(int((earliest + 0.4) / ARRIVAL_BIN_S)): 98, str(int((ends + 31.0) / ARRIVAL_BIN_S)): 1})
    status = {"seen": {"7": 100}, "now": {"1": 100}, "ready_arrived": {"7": {}}, "live_back_arrived": {"7": back}}

    def follow(at: float, round_: AlertRound, *, final: bool = False) -> bool:
        with mock.patch("loa.bench._soak_measure.time", SimpleNamespace(monotonic=lambda: at)):
            return follow_alert(round_, status, 1, config, final=final)

    waiting = AlertRound(at=30.0, bid=7, ends_at=ends, confirming_at=confirming)
    assert not follow(ends + 1.0, waiting)  # the simulation's figures are read: everyone is back in it
    assert waiting.resume_s == 1.0
    assert not follow(ends + RESUME_WAIT_S + BACK_HANDLED_WAIT_S - 0.1, waiting)
    assert waiting.back is None
    assert follow(ends + RESUME_WAIT_S + BACK_HANDLED_WAIT_S, waiting)
    assert waiting.back == 98  # the one 31 s after the end is not counted
    assert waiting.back_p99_s == pytest.approx(31.21, abs=0.006)  # the 99th: 31 s after the end, 0.2 s after

    cut_short = AlertRound(at=30.0, bid=7, ends_at=ends, confirming_at=confirming)
    assert follow(ends + 1.0, cut_short, final=True)  # the soak ended: as things stand
    assert cut_short.back == 98

    back[str(int((earliest + 2.0) / ARRIVAL_BIN_S))] += 1  # the fleet handled the last one: read at once
    handled = AlertRound(at=30.0, bid=7, ends_at=ends, confirming_at=confirming)
    assert follow(ends + 1.0, handled)
    assert handled.back == 99
    assert handled.back_p99_s == pytest.approx(2.01, abs=0.006)


@pytest.mark.e2e
def test_a_small_soak_meets_its_goals() -> None:
    result = CliRunner().invoke(soak, ["--json", "--devices", "30", "--minutes", "0.6", "--warmup-minutes", "0.2",
                                       "--alert-every", "12", "--alert-seconds", "3", "--sample-every", "1",
                                       "--read-rate", "3"])
    lines = result.stdout.strip().splitlines()
    assert lines, result.output
    record = json.loads(lines[-1])  # printed whatever the verdict
    assert record["bench"] == "soak"
    metrics = record["metrics"]
    assert result.exit_code == 0, (result.output[-2000:], metrics)
    assert metrics["goals_missed"] == 0
    assert metrics["sessions_end"] == metrics["fleet_connected_end"] == 30
    assert metrics["alerts"] >= 2
    assert metrics["alerts_failed"] == 0
    assert metrics["api_ok"] > 50
    assert metrics["tasks_warm"] > 0
    assert metrics["py_blocks_warm"] > 10_000
    assert metrics["samples"] >= 30
    assert metrics["live_frames"] > 0
    assert metrics["fleet_rtp_received"] > 0
    # no device lost its session during the soak (36 s: shorter than REKEY_AFTER_TIME, so no rekey either), and
    # the devices reported their state (the server's own counts)
    assert metrics["server_sessions_started"] == 0
    assert metrics["server_messages"].get("State", 0) > 0


def test_multicast_sends_the_live_stream_to_every_commune_and_needs_no_filter() -> None:
    config = SoakConfig(devices=10_000, communes=20, multicast=True)
    assert (config.live_count(), config.live_members(), config.keep(), config.watchdog_ms()) == (20, 10_000, 1, 5000)
    assert SoakConfig(devices=10_000, communes=20, multicast=True, live_communes=2).live_members() == 1000
    assert SoakConfig(devices=10_000, multicast=True, rtp_keep=8).keep() == 8


def test_every_commune_gets_its_own_multicast_group() -> None:
    communes = [f"C{c:02d}" for c in range(20)]
    groups = commune_groups(communes)
    assert list(groups) == communes
    addresses = [parse_group(group) for group in groups.values()]  # ValueError if one were not a group
    assert len({host for host, _ in addresses}) == 20
    assert all(host.startswith("239.255.") and 0 < port < 65536 for host, port in addresses)


@pytest.mark.e2e
def test_a_small_soak_over_multicast_brings_every_device_back_from_its_group(tmp_path: Path) -> None:
    """As above with ``--multicast``: the stream and the alerts reach the devices through their communes' groups
    only (no RTP filter, nothing by unicast), and every device back on the live stream after each alert is on it
    from its group. ``--trace`` keeps the timeline: each alert, then each sample with the server's gauges and the
    fleet's status."""
    trace = tmp_path / "trace.jsonl"
    result = CliRunner().invoke(soak, ["--json", "--devices", "30", "--minutes", "0.6", "--warmup-minutes", "0.2",
                                       "--alert-every", "12", "--alert-seconds", "3", "--sample-every", "1",
                                       "--read-rate", "3", "--multicast", "--trace", str(trace)])
    lines = result.stdout.strip().splitlines()
    assert lines, result.output
    metrics = json.loads(lines[-1])["metrics"]
    assert result.exit_code == 0, (result.output[-2000:], metrics)
    assert metrics["goals_missed"] == 0
    assert metrics["multicast"] is True
    assert (metrics["groups"], metrics["live_communes"], metrics["live_devices"], metrics["rtp_keep"]) == (3, 3, 30, 1)
    assert metrics["alerts"] >= 2
    assert metrics["live_resumed_min_fraction"] == 1.0
    assert metrics["live_resumed_from_group_min"] == 30  # every device back on the live stream came by its group
    # and every device was back by kernel arrival within RESUME_WAIT_S of each alert's end
    assert metrics["live_back_min_fraction"] == 1.0
    assert 0 < metrics["live_back_p99_max_s"] <= RESUME_WAIT_S + 3
    # every device was ready for every alert by kernel arrival, 99 % of them within the 3 s the alert played
    assert metrics["alerts_ready_min_fraction"] == 1.0
    assert 0 < metrics["alerts_ready_p99_max_s"] < 3
    assert metrics["alerts_half_handled_max_s"] is not None
    assert metrics["group_errors"] == 0
    assert metrics["group_pps"] >= 3 * 50 * 0.9  # the live stream on three groups, 50 packets/s each
    assert metrics["fleet_rtp_received"] > 0
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    alerts = [line for line in lines if "alert_at" in line]
    samples = [line for line in lines if "alert_at" not in line]
    assert len(alerts) == metrics["alerts"]
    assert len(samples) == metrics["samples"]
    assert all(sample["gauges"]["loa_streamer_control_sent"] > 0 for sample in samples)
    assert samples[-1]["fleet"]["connected"] == 30


@given(st.integers(1, 20_000), st.integers(1, 64))
def test_fleet_slices_cover_every_device_once(devices: int, procs: int) -> None:
    slices = fleet_slices(devices, procs)
    assert len(slices) == min(devices, procs)
    assert [i for first, count in slices for i in range(first, first + count)] == list(range(devices))
    sizes = [count for _, count in slices]
    assert max(sizes) - min(sizes) <= 1


def test_the_default_fleet_is_a_process_per_5000_devices_and_no_more_than_the_processors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert [default_fleet_procs(n) for n in (1, 30, 5000, 5001, 10_000, 20_000)] == [1, 1, 1, 2, 2, 2]
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_fleet_procs(20_000) == 4


def test_fleet_statuses_add_up() -> None:
    a = {"t": 5.0, "started": 3, "connected": 2, "filtered": False, "rtp_keep": 1, "telemetry_sent": 4,
         "alerts_refused": {"ReplayError": 1}, "seen": {"7": 3}, "now": {"7": 1}, "now_group": {"7": 1},
         "taps": {"open": 2, "datagrams": 100, "drops": 0}, "io": {"received": 10, "group_received": 100},
         "kernel_drops": 1, "timer_lag_max_s": 0.5, "timer_lag_s": 0.25, "drained_at_timers": 2,
         "sessions_lost_at_timers": 0, "control_retransmitted": 7,
         "sessions_ended": {"silent": 1, "dead": 0, "expired": 2}, "clock_answers_stale": 5,
         "verifications": {"verified": 1, "shared": 2}, "final": True,
         "ready_arrived": {"7": {"100": 2, "101": 1}}, "ready_handled": {"7": {"10": 3}},
         "live_back_arrived": {"7": {"900": 3}},
         "not_ready": {"7": {"devices": 1, "sample": [{"device": 2}]}}}
    b = {"t": 4.0, "started": 2, "connected": 2, "filtered": False, "rtp_keep": 1, "telemetry_sent": 2,
         "alerts_refused": {}, "seen": {"7": 2, "8": 1}, "now": {"7": 2}, "now_group": {},
         "taps": {"open": 1, "datagrams": 90, "drops": 3}, "io": {"received": 5, "group_received": 90},
         "kernel_drops": 0, "timer_lag_max_s": 2.5, "timer_lag_s": 0.0, "drained_at_timers": 1,
         "sessions_lost_at_timers": 1, "control_retransmitted": 2,
         "sessions_ended": {"silent": 3, "dead": 1, "expired": 0}, "clock_answers_stale": 0,
         "verifications": {"verified": 1, "shared": 1}, "final": False,
         "ready_arrived": {"7": {"101": 2}, "8": {"300": 1}}, "ready_handled": {"7": {"11": 2}, "8": {"30": 1}},
         "live_back_arrived": {"7": {"900": 1, "901": 1}, "8": {}},
         "not_ready": {"7": {"devices": 2, "sample": [{"device": 5003}, {"device": 5004}]}}}
    merged = merge_statuses([a, b])
    assert merged == {
        "t": 4.0, "procs": 2, "filtered": False, "final": False, "rtp_keep": 1, "timer_lag_max_s": 2.5,
        "timer_lag_s": 0.25, "group_received_max": 100, "control_retransmitted": 9, "started": 5, "connected": 4,
        "telemetry_sent": 6, "kernel_drops": 1,
        "drained_at_timers": 3, "sessions_lost_at_timers": 1, "alerts_refused": {"ReplayError": 1},
        "sessions_ended": {"silent": 4, "dead": 1, "expired": 2}, "clock_answers_stale": 5,
        "seen": {"7": 5, "8": 1}, "now": {"7": 3}, "now_group": {"7": 1},
        "io": {"received": 15, "group_received": 190}, "taps": {"open": 3, "datagrams": 190, "drops": 3},
        "verifications": {"verified": 2, "shared": 3},
        "ready_arrived": {"7": {"100": 2, "101": 3}, "8": {"300": 1}},
        "ready_handled": {"7": {"10": 3, "11": 2}, "8": {"30": 1}},
        "live_back_arrived": {"7": {"900": 4, "901": 1}, "8": {}},
        "not_ready": {"7": {"devices": 3, "sample": [{"device": 2}, {"device": 5003}, {"device": 5004}]}}}
    alone = merge_statuses([a])  # one process: its own figures
    assert {k: alone[k] for k in ("started", "connected", "seen", "taps", "group_received_max")} == {
        "started": 3, "connected": 2, "seen": {"7": 3}, "taps": a["taps"], "group_received_max": 100}
    assert merge_statuses([a, {}]) == {}  # a child that has not written yet: no partial sum
    assert merge_statuses([]) == {}


@pytest.mark.e2e
def test_two_fleet_processes_count_what_one_does(tmp_path: Path) -> None:
    """The same 12 devices against one `loa serve`, first as one fleet process, then split over two: the same
    devices started and connected, the server holds every one of them, and each reported telemetry."""
    config = SoakConfig(devices=12, communes=3, start_rate=60.0)
    site = seed_site(tmp_path / "data", config)
    server = spawn(["serve", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
    viewer: Api | None = None
    try:
        _, udp = server.find(r"devices on udp (\S+); server public key (\S+)", START_TIMEOUT_S)
        _, http = server.find(r"control plane API on (http://\S+)", START_TIMEOUT_S)
        _, authority = server.find(r"alert authority public key (\S+)", START_TIMEOUT_S)
        viewer = Api(http.group(1), site.tokens["xem"])
        host, _, port = udp.group(1).rpartition(":")
        spec = {"host": host, "port": int(port), "server_public": base64.b64decode(udp.group(2)).hex(),
                "authority": base64.b64decode(authority.group(1)).hex(), "seed": config.seed,
                "count": config.devices, "start_rate": config.start_rate, "rtp_keep": 1, "watchdog_ms": None,
                "backend": "asyncio", "multicast": False, "limit": 60}

        def sessions() -> int | None:
            assert viewer is not None
            return sample_process(server.proc.pid, viewer, 0.0).sessions

        def run(procs: int) -> tuple[dict[str, Any], dict[str, Any]]:
            paths = [tmp_path / f"status-{procs}-{k}.json" for k in range(procs)]
            children = spawn_fleets(spec, fleet_slices(config.devices, procs), paths, tmp_path)
            try:
                deadline = time.monotonic() + 30
                while True:  # bounded
                    status = merge_statuses([read_status(path) for path in paths])
                    if status.get("connected") == config.devices and sessions() == config.devices:
                        break
                    assert time.monotonic() < deadline, (procs, status, sessions())
                    time.sleep(0.2)
            finally:
                for child in children:
                    child.stop(grace=10.0)
            deadline = time.monotonic() + 20
            while sessions() != 0:  # every device said bye: the next fleet starts from none
                assert time.monotonic() < deadline, sessions()
                time.sleep(0.2)
            return status, merge_statuses([read_status(path) for path in paths])

        (one, one_final), (two, two_final) = run(1), run(2)
    finally:
        if viewer is not None:
            viewer.close()
        server.stop(grace=10.0)
    assert (one["procs"], two["procs"]) == (1, 2)
    for key in ("started", "connected"):
        assert one[key] == two[key] == config.devices, key
    assert one_final["final"]
    assert two_final["final"]
    assert one_final["started"] == two_final["started"] == config.devices
    assert one_final["telemetry_sent"] >= config.devices
    assert two_final["telemetry_sent"] >= config.devices
    assert one_final["alerts_accepted"] == two_final["alerts_accepted"] == 0
    assert one_final["sessions_lost_at_timers"] == two_final["sessions_lost_at_timers"] == 0
    assert one_final["sessions_ended"] == two_final["sessions_ended"] == {"silent": 0, "dead": 0, "expired": 0}
    assert one_final["clock_answers_stale"] == two_final["clock_answers_stale"] == 0


def test_udp_drops_counts_what_a_full_buffer_dropped_at_a_process() -> None:
    before = udp_drops(os.getpid())
    assert before is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as full, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # the kernel's minimum: a few datagrams
        full.bind(("127.0.0.1", 0))
        for _ in range(200):
            sender.sendto(b"x" * 100, full.getsockname())
        after = udp_drops(os.getpid())
    assert after is not None
    assert after - before >= 150
    assert udp_drops(2**22 + 1) is None  # no such process
