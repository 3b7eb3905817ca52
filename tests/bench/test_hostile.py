"""`loa bench hostile` scaled down, with a real-UDP share: none accepted, each counted once, every genuine alert
accepted; and its options' one-line errors. (The sans-I/O share and the counting: test_hostile_sans_io.py,
test_hostile_attempts.py.)"""

from __future__ import annotations

import json

from click.testing import CliRunner

from loa.bench.hostile import hostile


def test_hostile_bench_json_with_a_udp_share() -> None:
    result = CliRunner().invoke(hostile, ["--json", "--attempts", "1000", "--udp", "360", "--seed", "5"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["bench"] == "hostile"
    metrics = record["metrics"]
    assert metrics["attempts"] == 1000
    assert metrics["udp_attempts"] == 360
    assert metrics["accepted"] == 0
    assert metrics["miscounted"] == 0, metrics["miscounted_as"]
    assert metrics["genuine_alerts_accepted"] == metrics["genuine_alerts"] > 0


def test_udp_share_cannot_exceed_the_attempts() -> None:
    result = CliRunner().invoke(hostile, ["--attempts", "100", "--udp", "200"])
    assert result.exit_code != 0
    assert "--udp (200) cannot exceed --attempts (100)" in result.output
