"""Sequence-number and timestamp wraparound, NTP <-> server-time conversion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.protocol.errors import LocalProtocolError
from loa.protocol.rtp import (
    SeqUnwrapper,
    ns_to_ntp64,
    ntp64_to_ns,
    seq_add,
    seq_diff,
    seq_newer,
    ts_add,
    ts_diff,
)

ERA_START_NS = (2**31 - 2_208_988_800) * 10**9  # 1968-01-20T03:14:08Z, start of the span
ERA_END_NS = (2**32 + 2**31 - 2_208_988_800) * 10**9 - 1  # 2104-02-26


def test_sequence_wraparound() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768
    assert seq_newer(2, 65530)
    assert not seq_newer(65530, 2)
    assert not seq_newer(5, 5)


def test_timestamp_wraparound() -> None:
    assert ts_add(2**32 - 960, 960) == 0
    assert ts_diff(0, 2**32 - 960) == 960
    assert ts_diff(2**32 - 960, 0) == -960


@given(st.integers(0, 0xFFFF), st.integers(-32768, 32767))
def test_seq_diff_inverts_seq_add(seq: int, n: int) -> None:
    assert seq_diff(seq_add(seq, n), seq) == n


@given(st.integers(0, 2**32 - 1), st.integers(-(2**31), 2**31 - 1))
def test_ts_diff_inverts_ts_add(ts: int, n: int) -> None:
    assert ts_diff(ts_add(ts, n), ts) == n


def test_ntp_known_values() -> None:
    assert ns_to_ntp64(0) == 2_208_988_800 << 32
    assert ns_to_ntp64(500_000_000) == (2_208_988_800 << 32) | 0x80000000
    assert ntp64_to_ns((2_208_988_800 << 32) | 0x80000000) == 500_000_000
    # 2036-02-07T06:28:16Z is NTP era 1 second 0
    assert ns_to_ntp64((2**32 - 2_208_988_800) * 10**9) == 0
    assert ntp64_to_ns(0) == (2**32 - 2_208_988_800) * 10**9


@given(st.integers(ERA_START_NS, ERA_END_NS))
def test_ns_to_ntp_and_back_is_exact(ns: int) -> None:
    ntp = ns_to_ntp64(ns)
    assert 0 <= ntp < 2**64
    assert ntp64_to_ns(ntp) == ns


def test_ntp_out_of_range() -> None:
    with pytest.raises(LocalProtocolError):
        ns_to_ntp64(-2_208_988_801 * 10**9)
    with pytest.raises(LocalProtocolError):
        ntp64_to_ns(2**64)


def test_unwrapper_follows_wraps_both_ways() -> None:
    u = SeqUnwrapper()
    assert [u.unwrap(s) for s in (65534, 65535, 0, 1, 65535, 2)] == [65534, 65535, 65536, 65537, 65535, 65538]
    u = SeqUnwrapper()
    assert [u.unwrap(s) for s in (0, 65535, 0)] == [0, -1, 0]
    with pytest.raises(LocalProtocolError):
        u.unwrap(70000)


@given(st.integers(0, 0xFFFF), st.lists(st.integers(-100, 1000), max_size=200))
def test_unwrapper_tracks_a_walk(start: int, steps: list[int]) -> None:
    u = SeqUnwrapper()
    value = start
    assert u.unwrap(start) == start
    for step in steps:
        value += step
        assert u.unwrap(value & 0xFFFF) == value
