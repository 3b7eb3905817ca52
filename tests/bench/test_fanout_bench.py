"""`loa bench fanout` runs end to end with tiny sizes and ends with the one JSON line (no timing thresholds)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from loa.bench.fanout import destinations, fanout

needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                              reason="no C compiler: the fan-out ceiling is compiled at run time")


@pytest.mark.e2e
@needs_cc
@pytest.mark.parametrize("backend", ["auto", "sendto"])
def test_fanout_bench_json(backend: str) -> None:
    args = ["--json", "--devices", "3,7", "--packets", "40", "--repeat", "2", "--samples", "2", "--backend", backend]
    result = CliRunner().invoke(fanout, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["bench"] == "fanout"
    metrics = record["metrics"]
    for n in (3, 7):
        for key in ("us_per_pkt", "sendto_us_per_pkt", "ceiling_us_per_pkt", "ratio_to_ceiling", "pps",
                    "ceiling_pps", "spread_pct"):
            assert isinstance(metrics[f"{key}_{n}"], (int, float)), key
            assert metrics[f"{key}_{n}"] >= 0
        assert metrics[f"sample_delivery_{n}"] == 1.0
        assert (f"with_srtp_us_per_pkt_{n}" in metrics) == record["env"]["srtp"]
    for key in ("ratio_to_ceiling", "pps", "ceiling_pps"):
        assert metrics[key] == metrics[f"{key}_7"]
    assert record["env"]["backend"] in {"sendmmsg", "sendto"}
    assert record["env"]["python"]


@pytest.mark.e2e
def test_missing_compiler_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-here")
    result = CliRunner().invoke(fanout, ["--json", "--devices", "2", "--packets", "2", "--repeat", "1"])
    assert result.exit_code == 1
    assert "no C compiler" in result.output
    assert "Traceback" not in result.output


def test_bad_devices_option() -> None:
    result = CliRunner().invoke(fanout, ["--devices", "ten"])
    assert result.exit_code == 1
    assert "--devices" in result.output


def test_destinations_are_distinct_loopback_unicast() -> None:
    addresses = destinations(70_000, 9)
    assert len(set(addresses)) == 70_000
    for host, port in addresses[:300] + addresses[-300:]:
        octets = [int(part) for part in host.split(".")]
        assert octets[0] == 127
        assert 1 <= octets[3] <= 250
        assert port == 9
