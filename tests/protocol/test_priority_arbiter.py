"""Priority arbitration (spec sections 6.1-6.2): rank, the decision tables, and properties of the arbiter."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.protocol.errors import LocalProtocolError
from loa.protocol.priority import (
    ARRIVAL,
    FATE,
    Arbiter,
    Class,
    Dropped,
    Ended,
    Fate,
    Level,
    Outcome,
    Policy,
    Preempted,
    Relation,
    Resumed,
    Started,
    Waiting,
    rank,
)

PAIRS = list(itertools.product(Class, Level))


def test_rank_is_class_then_level() -> None:
    assert [rank(c, lvl) for c, lvl in PAIRS] == list(range(12))
    assert rank(Class.EMERGENCY, Level.COMMUNE) > rank(Class.NORMAL, Level.NATIONAL)
    assert rank(Class.EMERGENCY, Level.PROVINCE) > rank(Class.EMERGENCY, Level.DISTRICT)
    for bad in ((3, 0), (0, 4), (-1, 0)):
        with pytest.raises(LocalProtocolError):
            rank(*bad)


def test_decision_tables() -> None:
    assert ARRIVAL == {
        Relation.NO_CURRENT: Outcome.START,
        Relation.HIGHER: Outcome.PREEMPT,
        Relation.EQUAL: Outcome.DEFER,
        Relation.LOWER: Outcome.DEFER,
    }
    assert FATE == {Policy.RESUME: Fate.WAIT, Policy.DROP: Fate.DROP}


@pytest.mark.parametrize(("cur", "new"), list(itertools.product(PAIRS, PAIRS)))
@pytest.mark.parametrize("policy", list(Policy))
def test_every_class_level_pair_against_every_other(
    cur: tuple[Class, Level], new: tuple[Class, Level], policy: Policy
) -> None:
    arbiter = Arbiter()
    arbiter.arrive(1, *cur, policy)
    events = arbiter.arrive(2, *new, policy)
    preempts = (new[0], new[1]) > (cur[0], cur[1])
    if preempts:
        displaced = [Dropped(1, "preempted")] if policy is Policy.DROP else []
        assert events == [Preempted(1, 2), *displaced, Started(2)]
        assert arbiter.current == 2
        assert arbiter.waiting == (() if policy is Policy.DROP else (1,))
    else:
        assert events == ([Dropped(2, "outranked")] if policy is Policy.DROP else [Waiting(2)])
        assert arbiter.current == 1
        assert arbiter.waiting == (() if policy is Policy.DROP else (2,))


def test_bad_arguments() -> None:
    arbiter = Arbiter()
    with pytest.raises(LocalProtocolError):
        arbiter.arrive(1, 0, 0, "later")
    with pytest.raises(LocalProtocolError):
        arbiter.arrive(1, 5, 0, "drop")
    assert arbiter.current is None


def test_resumed_versus_started_and_rank_of() -> None:
    arbiter = Arbiter()
    arbiter.arrive(1, 0, 0, "resume")
    arbiter.arrive(2, 2, 0, "resume")
    arbiter.arrive(3, 0, 0, "resume")
    assert arbiter.rank_of(3) == 0
    assert arbiter.rank_of(2) == 8
    assert arbiter.rank_of(9) is None
    assert arbiter.end(2) == [Ended(2), Resumed(1)]
    assert arbiter.end(1) == [Ended(1), Started(3)]


# ---- properties against a reference model ----

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("arrive"),
            st.integers(1, 12),
            st.integers(0, 2),
            st.integers(0, 3),
            st.sampled_from(["resume", "drop"]),
        ),
        st.tuples(st.just("end"), st.integers(1, 12)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(steps)
def test_arbiter_properties(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    arbiter = Arbiter()
    live: dict[int, tuple[int, int]] = {}  # bid -> (rank, arrival) of admitted, not ended, not dropped
    policies: dict[int, str] = {}
    finished: set[int] = set()
    dropped_after_preemption: set[int] = set()
    arrival = 0
    for op in ops:
        if op[0] == "arrive":
            _, bid, cls, lvl, policy = op
            events = arbiter.arrive(bid, cls, lvl, policy)
            if bid in live or bid in finished:
                assert events == []
            else:
                arrival += 1
                live[bid] = (rank(cls, lvl), arrival)
                policies[bid] = policy
        else:
            events = arbiter.end(op[1])
            if op[1] in live:
                assert events[0] == Ended(op[1])
                del live[op[1]]
                finished.add(op[1])
            else:
                assert events == []
        for event in events:
            if isinstance(event, Dropped):
                assert policies[event.bid] == "drop"
                live.pop(event.bid, None)
                finished.add(event.bid)
                if event.reason == "preempted":
                    dropped_after_preemption.add(event.bid)
            if isinstance(event, Started | Resumed):
                assert event.bid not in dropped_after_preemption
        current, waiting = arbiter.current, arbiter.waiting
        assert current not in waiting
        assert len(set(waiting)) == len(waiting)
        assert set(waiting) | ({current} if current is not None else set()) == set(live)
        if live:
            best = max(live.values(), key=lambda v: (v[0], -v[1]))
            assert current is not None
            assert live[current] == best
            assert list(waiting) == sorted(waiting, key=lambda b: (-live[b][0], live[b][1]))
        else:
            assert current is None
        assert all(policies[b] == "resume" for b in waiting)
