"""`loa bench flood`'s own arithmetic: alert times matched to their trigger by broadcast id, and its options.
(The flood itself runs in tests/e2e/test_flood_e2e.py.)"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from loa.bench.flood import alert_times, flood


def test_each_device_s_time_is_taken_from_its_own_alert_s_trigger() -> None:
    triggers = [(7, 100.0), (8, 104.0)]
    held = [{"7": 100.05, "8": 104.2}, {"8": 104.01}, {"9": 200.0}]  # the second missed alert 7; 9 is not ours
    times, held_all = alert_times(held, triggers)
    assert times == pytest.approx([50.0, 200.0, 10.0])
    assert held_all == 1


@given(st.lists(st.dictionaries(st.sampled_from(["1", "2", "3"]), st.floats(0, 1000)), max_size=20))
def test_every_held_alert_of_the_window_is_counted_once(held: list[dict[str, float]]) -> None:
    triggers = [(1, 0.0), (2, 10.0)]
    times, held_all = alert_times(held, triggers)
    assert len(times) == sum(("1" in d) + ("2" in d) for d in held)
    assert held_all == sum("1" in d and "2" in d for d in held)


def test_alerts_closer_than_a_tone_and_a_second_are_one_line() -> None:
    result = CliRunner().invoke(flood, ["--seconds", "5", "--alerts", "2"])
    assert result.exit_code != 0
    assert "less than 3 s apart" in result.output
    assert "Traceback" not in result.output
