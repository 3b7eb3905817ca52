"""The sans-I/O share of `loa bench hostile` scaled down: every kind of forged, expired, replayed and off-path
attempt is refused and counted exactly once under its documented name, while every genuine alert, cancel and
command takes effect."""

from __future__ import annotations

from loa.bench._hostile_attempts import KINDS, HostileResult
from loa.bench._hostile_sans_io import run_sans_io


def test_two_thousand_attempts_sans_io_none_accepted_each_counted_once() -> None:
    result = HostileResult()
    run_sans_io(2_000, seed=7, result=result)
    metrics = result.metrics()
    assert metrics["attempts"] == 2_000
    assert metrics["accepted"] == 0
    assert metrics["miscounted"] == 0, metrics["miscounted_as"]
    assert set(result.attempts) == set(KINDS)
    assert metrics["genuine_alerts"] > 0
    assert metrics["genuine_alerts_accepted"] == metrics["genuine_alerts"]
    assert metrics["genuine_commands_applied"] == metrics["genuine_commands"]
    assert metrics["genuine_cancels_applied"] == metrics["genuine_cancels"]
    assert metrics["genuine_held_after_forged_cancel"] == metrics["rounds_with_forged_cancel"] > 0
    assert sum(result.body_bit_reasons.values()) == result.attempts["alert_body_bit"]
    assert "SignatureError" in result.body_bit_reasons  # some flips leave a body that parses
