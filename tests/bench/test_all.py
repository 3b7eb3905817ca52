"""`loa bench all --quick` runs every benchmark in child processes and writes results.json, report.md and plots.

No timing thresholds: the test checks the files, their schema and units, and that --json keeps its one line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loa.bench.all import PLAN, aggregate, all_benches, render_report, unit_of

needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                              reason="no C compiler: the fan-out ceiling is compiled at run time")


def _check_results(out: Path, names: set[str]) -> dict[str, Any]:
    results = json.loads((out / "results.json").read_text())
    assert results["failed"] == {}
    assert set(results["benches"]) == names
    assert results["machine"]["cpus"]
    assert results["quick"] is True
    assert "commit" in results
    for name, bench in results["benches"].items():
        assert bench["metrics"], name
        for key, entry in bench["metrics"].items():
            assert set(entry) >= {"value", "unit"}, (name, key)
            assert entry["unit"], (name, key)
        assert bench["argv"][:3] == ["loa", "bench", name]
    return results


@pytest.mark.e2e
@pytest.mark.slow
@needs_cc
def test_quick_run_writes_results_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(all_benches, ["--quick", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output + (result.stderr if result.stderr_bytes else "")
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # the progress never reaches stdout
    assert summary["bench"] == "all"
    assert summary["metrics"]["failed"] == {}
    results = _check_results(out, {step.name for step in PLAN})
    units = {key: entry["unit"] for key, entry in results["benches"]["fanout"]["metrics"].items()}
    assert units["us_per_pkt_50"] == "µs CPU/datagram"
    assert units["ratio_to_ceiling_50"] == "ratio"
    assert results["benches"]["sessions"]["metrics"]["bytes_per_session_50"]["unit"] == "bytes"
    lat = results["benches"]["latency"]["metrics"]
    assert lat["latency_p50_ms"]["unit"] == "ms"
    assert lat["frames_loa_d500"]["unit"] == "count"
    if "ratio_vs_gstreamer" in lat:  # GStreamer's peer ran
        assert lat["ratio_vs_gstreamer"]["unit"] == "ratio"
        assert (out / "latency.png").exists()
    report = (out / "report.md").read_text()
    for name in results["benches"]:
        assert f"## {name}" in report
    assert "| ceiling_us_per_pkt_50 |" in report
    plots = sorted(out.glob("*.png"))
    assert plots
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({plot.name})" in report
    assert (out / "logs" / "fanout.log").exists()


@pytest.mark.e2e
def test_only_one_bench_and_repeat_give_median_and_spread(tmp_path: Path) -> None:
    out = tmp_path / "one"
    result = CliRunner().invoke(all_benches, ["--quick", "--only", "sessions", "--repeat", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = _check_results(out, {"sessions"})
    assert results["repeat"] == 2
    bench = results["benches"]["sessions"]
    assert bench["runs"] == 2
    entry = bench["metrics"]["handshakes_per_s_50"]
    assert entry["min"] <= entry["value"] <= entry["max"]
    assert entry["unit"] == "1/s"
    assert "min–max" in (out / "report.md").read_text()
    assert any(out.glob("*.png"))


def test_a_failing_bench_is_reported_and_the_files_still_written(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from loa.bench import all as harness

    broken = harness.Step("sessions", (), ("--devices", "ten"), 1, 1)
    monkeypatch.setattr(harness, "PLAN", (broken,))
    result = CliRunner().invoke(all_benches, ["--quick", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "sessions" in result.output
    assert "Traceback" not in result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert "--devices" in results["failed"]["sessions"]
    assert "## Failed" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("args", [["--only", "nonsense"], ["--skip", "codec,nope"], ["--only", ""]])
def test_bad_selection_is_one_clear_line(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(all_benches, ["--out", str(tmp_path), *args])
    assert result.exit_code == 1
    assert args[0] in result.output
    assert "Traceback" not in result.output


def test_out_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(all_benches, ["--out", str(target), "--only", "codec"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("key", "unit"), [
    ("us_per_pkt_1000", "µs CPU/datagram"), ("trio_us_per_pkt_100", "µs CPU/datagram"),
    ("multicast_us_per_frame_10", "µs CPU/frame"), ("encode_us_20ms", "µs"), ("p99_ms_200", "ms"),
    ("skew_p99_ms_lan", "ms"), ("bringup_s_20", "s"), ("handshakes_per_s_100", "1/s"),
    ("frames_5pct", "count"), ("devices", "count"), ("ratio_to_ceiling", "ratio"), ("overhead_5pct", "ratio"),
    ("multicast_gain_10", "ratio"), ("exact_fraction_5pct", "fraction"), ("loss_seen_burst20", "fraction"),
    ("sample_delivery_10", "fraction"), ("spread_pct_10", "%"), ("frame_cpu_pct_20ms", "%"),
    ("bytes_per_session_100", "bytes"), ("size", "bytes"), ("pps_1000", "datagrams/s"),
    ("frame_pps_20ms", "datagrams/s"), ("loa_d500_p50_ms", "ms"), ("gst_jb20_p99_ms", "ms"),
    ("frames_loa_d500", "count"), ("ratio_vs_gstreamer_low", "ratio"), ("status_rps_sqlite", "requests/s"),
    ("streamer_ceiling_us_per_pkt_20000", "µs CPU/datagram"),
])
def test_units_from_metric_names(key: str, unit: str) -> None:
    assert unit_of(key) == unit


def test_aggregate_gives_median_min_max_and_keeps_non_numbers() -> None:
    runs = [{"a_ms": 3.0, "n": 1, "x": None}, {"a_ms": 1.0, "n": 1}, {"a_ms": 2.0, "n": 1, "x": "s"}]
    out = aggregate(runs)
    assert out["a_ms"] == {"value": 2.0, "min": 1.0, "max": 3.0, "unit": "ms"}
    assert out["n"]["value"] == 1
    assert isinstance(out["n"]["value"], int)
    assert out["x"] == {"value": "s", "unit": "1"}


def test_report_has_a_table_per_bench_and_marks_quick_runs() -> None:
    results = {
        "commit": "abc", "created": "now", "seconds": 1.0, "command": "loa bench all --out DIR --quick",
        "machine": {"cpu": "c", "cpus": 2, "machine": "m", "system": "s", "python": "3", "implementation": "C"},
        "backend": "sendmmsg", "quick": True, "repeat": 1, "failed": {},
        "benches": {"fanout": {"argv": ["loa", "bench", "fanout"], "seconds": [1.0], "env": {"gstreamer": "x"},
                               "metrics": {"us_per_pkt_10": {"value": 2.5, "unit": "µs CPU/datagram"}}}},
    }
    report = render_report(results, ["fanout_devices.png"])
    assert "## fanout" in report
    assert "| us_per_pkt_10 | 2.5 | µs CPU/datagram |" in report
    assert "quick run" in report
    assert "![fanout_devices](fanout_devices.png)" in report
    assert "GStreamer" in report
