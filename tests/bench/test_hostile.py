"""`loa bench hostile` scaled down: every kind of forged, expired, replayed and off-path attempt is refused and
counted exactly once under its documented name, while every genuine alert, cancel and command takes effect."""

from __future__ import annotations

import json
import random
from collections import Counter

from click.testing import CliRunner

from loa.bench.hostile import KINDS, Forger, HostileResult, Pair, counted, hostile, run_sans_io, snapshot
from loa.protocol.control import SignedAlert


def _check(result: HostileResult, attempts: int) -> None:
    metrics = result.metrics()
    assert metrics["attempts"] == attempts
    assert metrics["accepted"] == 0
    assert metrics["miscounted"] == 0, metrics["miscounted_as"]
    assert set(result.attempts) == set(KINDS)
    assert metrics["genuine_alerts"] > 0
    assert metrics["genuine_alerts_accepted"] == metrics["genuine_alerts"]
    assert metrics["genuine_commands_applied"] == metrics["genuine_commands"]
    assert metrics["genuine_cancels_applied"] == metrics["genuine_cancels"]
    assert metrics["genuine_held_after_forged_cancel"] == metrics["rounds_with_forged_cancel"] > 0


def test_two_thousand_attempts_sans_io_none_accepted_each_counted_once() -> None:
    result = HostileResult()
    run_sans_io(2_000, seed=7, result=result)
    _check(result, 2_000)
    assert sum(result.body_bit_reasons.values()) == result.attempts["alert_body_bit"]
    assert "SignatureError" in result.body_bit_reasons  # some flips leave a body that parses


def test_the_check_catches_a_device_that_accepts_a_forgery() -> None:
    """The counting itself can fail: a genuine alert passed off as an attempt is an acceptance, not a count."""
    pair = Pair(3)
    forger = Forger(random.Random(4), pair.authority)
    _, message = forger.genuine(pair.server_ns(), pair.server.allocate_bid())
    before = snapshot(pair.device)
    pair.send(message)
    ok, drops = counted(KINDS["alert_wrong_key"], before, snapshot(pair.device))
    assert not ok
    assert drops == Counter()
    assert pair.device.alerts_accepted == 1
    again = snapshot(pair.device)
    pair.send(SignedAlert(body=message.body, sig=message.sig))  # the same again: a replay, counted as one
    ok, drops = counted(KINDS["alert_replay_message"], again, snapshot(pair.device))
    assert ok
    assert drops == Counter({"ReplayError": 1})


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
