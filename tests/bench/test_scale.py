"""`loa bench scale` runs end to end with tiny sizes (no timing thresholds) and its helpers behave."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from loa.bench.scale import scale

needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                              reason="no C compiler: the fan-out ceiling is compiled at run time")


@pytest.mark.e2e
@needs_cc
def test_scale_bench_json() -> None:
    args = ["--json", "--devices", "4,8", "--streams", "1,2,50", "--streams-devices", "8", "--packets", "64",
            "--stream-seconds", "0.2", "--frame-devices", "6", "--multicast", "2,3", "--repeat", "1"]
    result = CliRunner().invoke(scale, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["bench"] == "scale"
    metrics = record["metrics"]
    for n in (4, 8):
        for key in ("us_per_pkt", "ceiling_us_per_pkt", "sendto_us_per_pkt", "trio_us_per_pkt",
                    "asyncio_us_per_pkt", "trio_ratio_to_ceiling", "asyncio_ratio_to_ceiling"):
            assert metrics[f"{key}_{n}"] > 0, key
        assert metrics[f"sample_delivery_{n}"] == 1.0
        assert (f"gst_us_per_pkt_{n}" in metrics) == (record["env"]["gstreamer"] == "installed")
    for streams in (1, 2):
        assert metrics[f"streams_asyncio_us_per_pkt_{streams}"] > 0
        assert metrics[f"streams_trio_us_per_pkt_{streams}"] > 0
    assert "streams_asyncio_us_per_pkt_50" not in metrics  # more streams than zones: skipped
    assert metrics["streams_devices"] == 8
    for ms in (20, 40, 60):
        assert metrics[f"frame_us_per_pkt_{ms}ms"] > 0
        assert metrics[f"frame_pps_{ms}ms"] == round(6 * 1000 / ms)
    assert metrics["frame_bytes_20ms"] < metrics["frame_bytes_40ms"] < metrics["frame_bytes_60ms"]
    assert metrics["frame_delivery"] == 1.0
    if record["env"]["multicast"].startswith("available"):
        for m in (2, 3):
            assert metrics[f"multicast_delivery_{m}"] == 1.0
            assert metrics[f"multicast_us_per_frame_{m}"] > 0
    else:
        assert "multicast_us_per_frame_2" not in metrics


@pytest.mark.e2e
@needs_cc
def test_streamer_counts_above_the_shared_set_get_sessions_of_their_own() -> None:
    args = ["--json", "--parts", "streamer", "--devices", "4", "--streamer-counts", "2,4,8", "--streams", "1,2",
            "--streams-devices", "4", "--stream-seconds", "0.2", "--repeat", "1"]
    result = CliRunner().invoke(scale, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])["metrics"]
    for n in (2, 4, 8):  # 8 is not among --devices and above --streams-devices: a set of its own
        for key in ("trio_us_per_pkt", "asyncio_us_per_pkt", "streamer_ceiling_us_per_pkt"):
            assert metrics[f"{key}_{n}"] > 0, (key, n)
    assert metrics["streams_devices"] == 4  # the streams split the shared set, not the larger one
    assert metrics["streams_asyncio_us_per_pkt_2"] > 0
    assert "us_per_pkt_4" not in metrics  # the bare fan-out part did not run


@pytest.mark.parametrize(("option", "value"), [("--devices", "ten"), ("--streams", "0"), ("--parts", "nope"),
                                               ("--multicast", "x"), ("--streamer-counts", "0")])
def test_bad_options_are_one_clear_line(option: str, value: str) -> None:
    result = CliRunner().invoke(scale, [option, value])
    assert result.exit_code == 1
    assert option in result.output
    assert "Traceback" not in result.output


@needs_cc
def test_device_counts_must_share_one_set_of_sessions() -> None:
    result = CliRunner().invoke(scale, ["--devices", "3,4", "--streams", "1", "--parts", "streamer", "--repeat", "1"])
    assert result.exit_code == 1
    assert "multiples of" in result.output
