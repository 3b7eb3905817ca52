"""The counting of `loa bench hostile` can fail: an acceptance is never taken for a count, and a replay is counted
once under its documented name."""

from __future__ import annotations

import random
from collections import Counter

from loa.bench._hostile_attempts import KINDS, Forger, counted, snapshot
from loa.bench._hostile_sans_io import Pair
from loa.protocol.control import SignedAlert


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
