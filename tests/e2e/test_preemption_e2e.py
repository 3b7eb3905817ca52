"""Two zones, each with its own programme; a signed emergency alert to zone A takes over every device there at
a frame boundary while zone B keeps its programme; after the alert, A resumes (or drops) per the programme's
policy. Recorded audio is compared with what was sent, segment by segment."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import numpy as np
import pytest
from _site import (
    FRAME_NS,
    SAMPLE_RATE,
    Device,
    Site,
    read_wav,
    segments,
    tone_correlation,
    tone_frames,
    wait_for,
    windowed_tone_correlation,
)

from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e

TONE_A, TONE_B, TONE_ALERT = 440.0, 660.0, 1000.0
# A resumed live programme restarts at its first frame boundary after the alert's end (within timer jitter).
RESUME_SLACK_S = 0.005
GRID_STEP_S = 2e-5  # a frame more than this off 20 ms after the previous one was moved by a clock correction


def frames_of(device: Device, bid: int) -> int:
    return sum(1 for e in device.core.log.entries if e.bid == bid)


def check_frame_grid(device: Device, alert: int, *, max_preempt_step: float = 0.02) -> list[float]:
    """Every broadcast frame sits on its broadcast's 20 ms grid of server time, at the true instant that grid
    maps to; frames of one broadcast follow one another without overlap or gap. At the alert's first frame the
    alert cuts the programme frame that was playing (its boundary is the switch); after the alert's last frame
    the programme resumes at its own next frame boundary (less than one frame of silence, no overlap).
    Returns the steps (s) between frames at each switch."""
    assert device.recorder is not None
    played = [p for p in device.recorder.played if p.info.bid is not None]
    first: dict[int, tuple[int, float]] = {}
    for p in played:
        bid = p.info.bid
        assert bid is not None
        server0, true0 = first.setdefault(bid, (p.info.server_at, p.at))
        assert (p.info.server_at - server0) % FRAME_NS == 0, (device.name, p)
        assert abs((p.at - true0) - (p.info.server_at - server0) / 1e9) < 1e-3, (device.name, p)
    steps = []
    for before, after in itertools.pairwise(played):
        step = after.at - before.at
        if after.info.bid == before.info.bid:
            assert abs(step - 0.02) < 1e-3, (device.name, before, after)
            continue
        steps.append(step)
        if after.info.bid == alert:  # preemption: the alert's first frame replaces the rest of the one playing
            assert 0.0 < step <= max_preempt_step + 1e-4, (device.name, before, after)
        else:  # resumption: the programme's next boundary after the alert's last frame ended (see above)
            assert 0.02 - 1e-4 <= step < 0.04 + RESUME_SLACK_S, (device.name, before, after)
    return steps


async def run_scenario(tmp_path: Path, policy: str, zones: tuple[str, ...] = ("A", "A", "A", "B", "B")
                       ) -> tuple[Site, int, int, int]:
    site = Site(tmp_path, seed=11 if policy == "resume" else 12)
    async with anyio.create_task_group() as tg:
        await site.start_server(tg)
        for zone in zones:
            site.add_device(zone)
        await wait_for(lambda: all(d.core.statistics().clock_ready for d in site.devices), 10, "clock sync")
        bid_a = site.service.start_broadcast(ToneSource(TONE_A), ["A"], policy=policy, name="programme A")
        bid_b = site.service.start_broadcast(ToneSource(TONE_B), ["B"], policy=policy, name="programme B")
        await wait_for(lambda: all(frames_of(d, bid_a) >= 75 for d in site.in_zone("A"))
                       and all(frames_of(d, bid_b) >= 75 for d in site.in_zone("B")), 10, "programmes")
        alert = site.service.trigger_alert(ToneSource(TONE_ALERT, seconds=2.0), signing_key=site.authority,
                                           zones=["A"], ttl_s=60, text="Bão số 3", policy="drop")
        await wait_for(lambda: all(frames_of(d, alert) >= 95 for d in site.in_zone("A")), 10, "the alert")
        await wait_for(lambda: all(d.core.statistics().current != alert for d in site.in_zone("A")), 5,
                       "the alert's end")
        await anyio.sleep(1.5)  # programme after the alert (resume) or silence (drop)
        site.close()
        await site.stop_server()
        tg.cancel_scope.cancel()
    return site, bid_a, bid_b, alert


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["resume", "drop"])
async def test_alert_preempts_zone_a_only_and_the_programme_follows_its_policy(
        anyio_backend: str, policy: str, tmp_path: Path) -> None:
    with anyio.fail_after(25):
        site, bid_a, bid_b, alert = await run_scenario(tmp_path, policy)
    figures = []
    switches: list[float] = []
    plc = 0
    for device in site.devices:
        assert device.recorder is not None
        wav = read_wav(device.recorder.path)
        t0 = device.recorder.played[0].at
        runs = [s for s in segments(device.recorder.played) if s.bid is not None]
        expected = {bid_a: TONE_A, bid_b: TONE_B, alert: TONE_ALERT}
        order = [s.bid for s in runs]
        if device.zone == "B":
            assert order == [bid_b], (device.name, order)
        elif policy == "resume":
            assert order == [bid_a, alert, bid_a], (device.name, order)
        else:
            assert order == [bid_a, alert], (device.name, order)
            assert frames_of(device, bid_a) == len(runs[0].frames)  # dropped: never heard again
        for run in runs:
            assert run.bid is not None
            heard = [p for p in run.frames if p.info.kind != "plc"]  # concealment is not what was sent
            start = round((heard[0].at - t0) * SAMPLE_RATE)
            end = round((heard[-1].at - t0) * SAMPLE_RATE) + heard[-1].info.samples
            plc += len(run.frames) - len(heard)
            assert end - start >= 0.9 * SAMPLE_RATE, (device.name, run.bid)
            trim = 0.06 * SAMPLE_RATE
            recorded = wav[int(start + trim):int(end - trim)]
            # where a clock correction moved a frame (checked by check_frame_grid): no window straddles one
            stepped = [b for a, b in itertools.pairwise(run.frames) if abs(b.at - a.at - 0.02) > GRID_STEP_S]
            cuts = [round((b.at - t0) * SAMPLE_RATE) - int(start + trim) for b in stepped]
            corr = windowed_tone_correlation(recorded, expected[run.bid], cuts=cuts)
            figures.append(round(corr, 4))
            concealed = [round(p.at - t0, 3) for p in run.frames if p.info.kind != "packet"]
            assert corr >= 0.95, (f"{device.name} bid {run.bid}: correlation {corr:.3f}; frames not from a packet "
                                  f"(s): {concealed}; frames moved off the 20 ms grid (s): "
                                  f"{[round(b.at - t0, 3) for b in stepped]}")
            for other in set(expected.values()) - {expected[run.bid]}:
                assert tone_correlation(recorded[:SAMPLE_RATE // 2], other) < 0.5
        switches += check_frame_grid(device, alert)
    print(f"{anyio_backend}/{policy}: correlations {figures}, switch steps (ms) "
          f"{[round(1000 * s, 2) for s in switches]}, concealed frames {plc}")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_dropped_programme_plays_until_the_alerts_first_frame(anyio_backend: str, tmp_path: Path) -> None:
    with anyio.fail_after(25):
        site, _, _, alert = await run_scenario(tmp_path, "drop", zones=("A",))
    check_frame_grid(site.devices[0], alert)


def test_a_clock_correction_inside_a_window_is_not_held_against_the_audio() -> None:
    """A recording whose frames moved 5 samples (104 µs) at one instant: a window across the jump correlates
    poorly with the tone; windows that stop at the cut do not. Wrong audio fails either way."""
    tone = tone_frames(TONE_ALERT, 60).astype(np.float64)
    jump = 7_000  # not on a window boundary (12,000 samples)
    recorded = np.concatenate([tone[:jump], tone[jump + 5:]])
    assert windowed_tone_correlation(recorded, TONE_ALERT) < 0.95
    assert windowed_tone_correlation(recorded, TONE_ALERT, cuts=[jump]) > 0.99
    wrong = tone_frames(TONE_A, 60).astype(np.float64)
    assert windowed_tone_correlation(wrong, TONE_ALERT, cuts=[jump]) < 0.5
