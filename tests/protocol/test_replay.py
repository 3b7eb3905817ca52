"""The 1024-counter replay window (PROTOCOL.md 3.7) against a set-based reference model."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.errors import ReplayError
from loa.protocol.replay import REJECT_AFTER_MESSAGES, REPLAY_WINDOW, ReplayWindow


class Reference:
    """The rule of section 3.7 stated directly: everything accepted is remembered forever."""

    def __init__(self) -> None:
        self.accepted: set[int] = set()

    def acceptable(self, counter: int) -> bool:
        if not 0 <= counter < REJECT_AFTER_MESSAGES:
            return False
        if not self.accepted:
            return True
        greatest = max(self.accepted)
        return counter > greatest or (greatest - counter <= REPLAY_WINDOW and counter not in self.accepted)


def _counters() -> st.SearchStrategy[list[int]]:
    near = st.integers(min_value=0, max_value=3000)
    jumps = st.sampled_from([0, 1, 1023, 1024, 1025, 1026, 2047, 2048, 2**32, 2**60 - 1, 2**60, 2**64 - 1])
    return st.lists(st.one_of(near, jumps), max_size=200)


@given(_counters())
def test_matches_the_reference_model(counters: list[int]) -> None:
    window, reference = ReplayWindow(), Reference()
    for counter in counters:
        expected = reference.acceptable(counter)
        try:
            window.check(counter)
            ok = True
        except ReplayError:
            ok = False
        assert ok == expected, counter
        if ok:
            greatest_before = window.greatest
            assert window.accept(counter) == (greatest_before is None or counter > greatest_before)
            reference.accepted.add(counter)
        else:
            with pytest.raises(ReplayError):
                window.accept(counter)
        assert window.greatest == (max(reference.accepted) if reference.accepted else None)


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=100))
def test_state_export_round_trips(counters: list[int]) -> None:
    window = ReplayWindow()
    for counter in counters:
        with contextlib.suppress(ReplayError):
            window.accept(counter)
    copy = ReplayWindow.from_state(window.greatest, window.seen())
    assert copy.seen() == window.seen()
    for counter in range(0, 5100, 7):
        outcomes = []
        for w in (window, copy):
            try:
                w.check(counter)
                outcomes.append(True)
            except ReplayError:
                outcomes.append(False)
        assert outcomes[0] == outcomes[1]


def test_edges() -> None:
    window = ReplayWindow()
    assert window.greatest is None
    window.accept(0)
    with pytest.raises(ReplayError):
        window.accept(0)
    window.accept(5000)
    window.check(5000 - 1024)
    with pytest.raises(ReplayError):
        window.check(5000 - 1025)
    window.accept(5000 - 1024)
    with pytest.raises(ReplayError):
        window.check(5000 - 1024)
    window.accept(2**60 - 1)
    with pytest.raises(ReplayError):
        window.check(2**60)
    assert window.seen() == [2**60 - 1]
