"""The devices told of an alert (`streamer.alerts.AlertTargets`): the same answers as a set, in sorted order, in a
fraction of a set's memory (a record is kept for the alert's whole validity, an hour by default)."""

from __future__ import annotations

import gc
import hashlib
import sys
import types

from hypothesis import given, settings
from hypothesis import strategies as st

from loa.streamer.alerts import AlertTargets


def key(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(4, "big")).digest()


_BATCHES = st.lists(st.lists(st.integers(0, 999), max_size=300), max_size=12)


@settings(max_examples=200, deadline=None)
@given(first=st.lists(st.integers(0, 999), max_size=400), batches=_BATCHES)
def test_it_answers_as_a_set_does(first: list[int], batches: list[list[int]]) -> None:
    """Built from any keys, then updated in batches of any size (below and above the point where the later keys
    are merged into the sorted ones): membership, iteration in sorted order and length as a set of the same keys."""
    targets = AlertTargets(key(i) for i in first)
    model = {key(i) for i in first}
    for batch in batches:
        targets.update(key(i) for i in batch)
        model.update(key(i) for i in batch)
        assert list(targets) == sorted(model)
        assert len(targets) == len(model)
    for i in range(1000):
        assert (key(i) in targets) == (key(i) in model)
    assert None not in targets
    assert b"" not in targets


def _own_bytes(targets: AlertTargets) -> int:
    """``sys.getsizeof`` over what the targets hold, not counting the keys (the registry's objects)."""
    total, stack, seen = 0, [targets], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, bytes | type | types.ModuleType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def test_a_province_s_alert_takes_a_sixth_of_a_set() -> None:
    """10,000 devices: about 8 bytes a device (a set of them takes 512 KiB), also after 500 came back later."""
    keys = [key(i) for i in range(10_000)]
    targets = AlertTargets(keys[:9_500])
    for k in keys[9_500:]:
        targets.update([k])
    assert len(targets) == 10_000
    held = _own_bytes(targets)
    assert held <= 10_000 * 8 + 16_384, held
    assert held * 6 <= sys.getsizeof(set(keys))
