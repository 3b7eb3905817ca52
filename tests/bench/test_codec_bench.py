"""`loa bench codec` runs end to end and its --json line has the agreed shape (timings are not checked)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from loa.bench.codec import codec


def test_codec_bench_json_line_has_every_metric() -> None:
    result = CliRunner().invoke(codec, ["--json", "--seconds", "0.1", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert set(record) == {"bench", "metrics", "env"}
    assert record["bench"] == "codec"
    metrics = record["metrics"]
    for ms in (10, 20, 40, 60):
        for op in ("encode", "decode", "pyav_encode", "pyav_decode"):
            assert metrics[f"{op}_us_{ms}ms"] > 0
            assert metrics[f"{op}_spread_pct_{ms}ms"] >= 0
        assert metrics[f"bytes_per_packet_{ms}ms"] > 0
        assert metrics[f"pyav_bytes_per_packet_{ms}ms"] > 0
    assert metrics["ratio_vs_pyav"] > 0
    assert metrics["decode_ratio_vs_pyav"] > 0
    assert record["env"]["libopus"].startswith("libopus ")
    assert record["env"]["seconds"] == 0.1


def test_codec_bench_human_table() -> None:
    result = CliRunner().invoke(codec, ["--seconds", "0.1", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    assert "ratio_vs_pyav" in result.output
    assert "{" not in result.output.splitlines()[-1]
