"""`loa bench sync`, `loss` and `alert` run end to end with tiny sizes and end with the one JSON line (no timing
thresholds)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from click.testing import CliRunner

from loa.bench._sim import BurstLoss
from loa.bench.alert import alert
from loa.bench.loss import loss
from loa.bench.sync import sync


def _record(command: Any, args: list[str], name: str) -> dict[str, Any]:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["bench"] == name
    assert record["env"]["python"]
    return record


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_sync_bench_json() -> None:
    record = _record(sync, ["--json", "--devices", "3", "--settle", "20", "--seconds", "0.5"], "sync")
    metrics = record["metrics"]
    for link in ("lan", "4g"):
        for key in ("skew_p99_ms", "skew_median_ms", "skew_max_ms", "frames"):
            assert _number(metrics[f"{key}_{link}"]), key
        assert metrics[f"frames_{link}"] > 0
    for key in ("skew_p99_ms", "skew_max_ms", "skew_median_ms", "snapcast_published_ms", "ratio_vs_snapcast",
                "worst_skew_p99_ms"):
        assert _number(metrics[key]), key
    assert "snapcast" in record["env"]["snapcast_source"]
    # The headline is the steady link's; the worst link is named beside it, never hidden.
    assert record["env"]["headline_link"] == "lan"
    for key in ("skew_p99_ms", "skew_max_ms", "skew_median_ms"):
        assert metrics[key] == metrics[f"{key}_lan"], key
    worst = record["env"]["worst_link"]
    assert metrics["worst_skew_p99_ms"] == metrics[f"skew_p99_ms_{worst}"] == max(
        metrics["skew_p99_ms_lan"], metrics["skew_p99_ms_4g"])


def test_sync_bench_headline_without_the_lan_link_is_the_link_that_ran() -> None:
    record = _record(sync, ["--json", "--devices", "2", "--settle", "20", "--seconds", "0.3", "--links", "4g"],
                     "sync")
    metrics = record["metrics"]
    assert record["env"]["headline_link"] == record["env"]["worst_link"] == "4g"
    assert metrics["skew_p99_ms"] == metrics["skew_p99_ms_4g"] == metrics["worst_skew_p99_ms"]
    assert "skew_p99_ms_lan" not in metrics


def test_loss_bench_json() -> None:
    record = _record(loss, ["--json", "--devices", "2", "--settle", "10", "--seconds", "2"], "loss")
    metrics = record["metrics"]
    for model in ("5pct", "burst20"):
        for key in ("exact_fraction", "fec_fraction", "concealed_fraction", "missing_fraction", "overhead",
                    "loss_seen"):
            assert _number(metrics[f"{key}_{model}"]), key
        assert 0.0 <= metrics[f"exact_fraction_{model}"] <= 1.0
        assert metrics[f"overhead_{model}"] >= 1.0
    assert metrics["exact_fraction"] == metrics["exact_fraction_5pct"]
    assert metrics["overhead"] == metrics["overhead_5pct"]


@pytest.mark.e2e
def test_alert_bench_json() -> None:
    record = _record(alert, ["--json", "--devices", "4", "--full", "2", "--settle", "1"], "alert")
    metrics = record["metrics"]
    for key in ("p50_ms", "p99_ms", "max_ms", "packet_p99_ms", "playout_p50_ms", "playout_p99_ms",
                "held_fraction", "bringup_s"):
        assert _number(metrics[f"{key}_4"]), key
    assert metrics["held_fraction_4"] == 1.0
    for key in ("p50_ms", "p99_ms", "playout_p99_ms"):
        assert metrics[key] == metrics[f"{key}_4"]
    assert metrics["devices"] == 4


@pytest.mark.parametrize("command", [sync, loss])
def test_bad_selection_is_one_clear_line(command: Any) -> None:
    option = "--links" if command is sync else "--models"
    result = CliRunner().invoke(command, [option, "nonsense"])
    assert result.exit_code == 1
    assert option in result.output
    assert "Traceback" not in result.output


def test_alert_bad_devices_option() -> None:
    result = CliRunner().invoke(alert, ["--devices", "ten"])
    assert result.exit_code == 1
    assert "--devices" in result.output


def test_burst_loss_has_the_asked_long_run_rate_and_bursts() -> None:
    channel = BurstLoss(random.Random(5), loss=0.2, mean_burst=3.0)
    assert not channel.drop()  # off until switched on
    channel.active = True
    drops = [channel.drop() for _ in range(200_000)]
    assert abs(sum(drops) / len(drops) - 0.2) < 0.01
    bursts, run = [], 0
    for lost in drops:
        if lost:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert abs(sum(bursts) / len(bursts) - 3.0) < 0.2
