"""`loa bench fanout`'s extra peers: the streamer service on trio and asyncio, and GStreamer's multiudpsink."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from loa.bench.fanout import fanout, gstreamer_available

needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                              reason="no C compiler: the fan-out ceiling is compiled at run time")


@pytest.mark.e2e
@needs_cc
def test_peers_on_the_same_destinations() -> None:
    args = ["--json", "--devices", "5", "--packets", "40", "--repeat", "2", "--samples", "2",
            "--peers", "streamer,gstreamer", "--stream-seconds", "0.2"]
    result = CliRunner().invoke(fanout, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    metrics = record["metrics"]
    for name in ("trio", "asyncio"):
        assert metrics[f"{name}_us_per_pkt_5"] > 0
        assert metrics[f"{name}_ratio_to_ceiling_5"] > 0
    assert metrics["sample_delivery_5"] == 1.0  # GStreamer's copies reached the sample receivers too
    if gstreamer_available() is None:
        assert metrics["gst_us_per_pkt_5"] > 0
        assert record["env"]["gstreamer"].startswith("gst-launch")
    else:
        assert "gst_us_per_pkt_5" not in metrics
        assert record["env"]["gstreamer"].startswith("not installed")
    assert record["env"]["peers"] == sorted(record["env"]["peers"])


@pytest.mark.e2e
@needs_cc
def test_missing_gstreamer_is_an_entry_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from loa.bench import fanout as module

    monkeypatch.setattr(module, "GST_LAUNCH", "no-such-gst-launch")
    result = CliRunner().invoke(fanout, ["--json", "--devices", "3", "--packets", "9", "--repeat", "1",
                                         "--peers", "gstreamer"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["env"]["gstreamer"].startswith("not installed")
    assert "gst_us_per_pkt_3" not in record["metrics"]


def test_bad_peers_option() -> None:
    result = CliRunner().invoke(fanout, ["--peers", "vlc"])
    assert result.exit_code == 1
    assert "--peers" in result.output
