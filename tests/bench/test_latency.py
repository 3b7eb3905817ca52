"""`loa bench latency`: a short live announcement through the streamer to real devices, and through GStreamer.

Real sockets on loopback, real devices and a real GStreamer pipeline (when PyGObject and GStreamer are here).
No timing thresholds beyond what the set-up itself guarantees: the playout delay is a floor of loa's latency
(a frame cannot play before it was sent plus the delay), and the figures must be finite and ordered."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import loa.bench.latency as module
from loa.bench.latency import announcement, gstreamer_python, latency
from loa.codecs import packet_samples

pytestmark = pytest.mark.e2e


def _run(args: list[str]) -> dict[str, object]:
    result = CliRunner().invoke(latency, ["--json", "--devices", "2", "--seconds", "0.6", *args])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["bench"] == "latency"
    return record


def test_short_run_reports_loa_and_gstreamer_latency() -> None:
    record = _run(["--delay-ms", "300,60", "--gst-latency", "200,20"])
    metrics = record["metrics"]
    assert isinstance(metrics, dict)
    for delay in (300, 60):
        p50, p99 = metrics[f"loa_d{delay}_p50_ms"], metrics[f"loa_d{delay}_p99_ms"]
        assert delay <= p50 <= p99 < delay + 2000  # the playout delay is a floor; a frame played, within reason
        assert metrics[f"frames_loa_d{delay}"] >= 2 * 20  # two devices, most of the 30 frames each
        assert 0 < metrics[f"loa_d{delay}_input_wait_p50_ms"] < p50
        assert metrics[f"loa_d{delay}_late"] >= 0
    assert metrics["latency_p50_ms"] == metrics["loa_d300_p50_ms"]
    assert metrics["prebuffer_ms"] == 60
    assert metrics["frames_sent"] == 60
    env = record["env"]
    assert isinstance(env, dict)
    python, _ = gstreamer_python()
    if python is None:
        assert env["gstreamer"].startswith("not installed")
        assert "gst_p50_ms" not in metrics
        return
    assert "GStreamer" in env["gstreamer"]
    for jb in (200, 20):
        p50, p99 = metrics[f"gst_jb{jb}_p50_ms"], metrics[f"gst_jb{jb}_p99_ms"]
        assert 0 < p50 <= p99 < 2000
        assert metrics[f"frames_gst_jb{jb}"] >= 20
    # A larger jitter buffer holds packets longer (by how much depends on its clock-skew estimate: not exactly
    # its latency setting, so the check is relative).
    assert metrics["gst_jb200_p50_ms"] > metrics["gst_jb20_p50_ms"] + 50
    assert math.isclose(metrics["ratio_vs_gstreamer"], metrics["loa_d300_p50_ms"] / metrics["gst_jb200_p50_ms"],
                        rel_tol=1e-2)
    assert math.isclose(metrics["ratio_vs_gstreamer_low"], metrics["loa_d60_p50_ms"] / metrics["gst_jb20_p50_ms"],
                        rel_tol=1e-2)


def test_missing_gstreamer_is_an_entry_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "GST_PYTHONS", ("no-such-python3",))
    record = _run(["--delay-ms", "200"])
    metrics = record["metrics"]
    assert isinstance(metrics, dict)
    assert record["env"]["gstreamer"].startswith("not installed")  # type: ignore[index]
    assert "ratio_vs_gstreamer" not in metrics
    assert metrics["loa_d200_p50_ms"] >= 200


@pytest.mark.parametrize(("args", "message"), [
    (["--delay-ms", "abc"], "--delay-ms takes comma-separated whole milliseconds"),
    (["--delay-ms", "100,100"], "must be distinct"),
    (["--gst-latency", "-5"], "--gst-latency values must be distinct and 0-10000 ms"),
])
def test_bad_options_are_one_clear_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(latency, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_announcement_frames_are_told_apart_by_their_bytes() -> None:
    packets = announcement(100, 7)
    assert len(packets) == 100
    assert len(set(packets)) == 100
    assert all(packet_samples(packet) == 960 and not packet[0] & 0x04 for packet in packets)  # mono, 20 ms
