from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.streamer.zones import Zone, ZoneError, ZoneTree


def province() -> ZoneTree:
    return ZoneTree([
        Zone("48", "Thành phố Đà Nẵng", level="province"),
        Zone("490", "Quận Liên Chiểu", "48", "district"),
        Zone("20194", "Phường Hòa Hiệp Bắc", "490", "commune"),
        Zone("20194-01", "Tổ dân phố 1", "20194", "hamlet"),
        Zone("20194-02", "Tổ dân phố 2", "20194", "hamlet"),
        Zone("491", "Quận Thanh Khê", "48", "district"),
    ])


def test_path_and_subtree() -> None:
    tree = province()
    assert tree.path("20194-02") == ("48", "490", "20194", "20194-02")
    assert tree.subtree("490") == {"490", "20194", "20194-01", "20194-02"}
    assert tree.is_within("20194-01", "48")
    assert not tree.is_within("20194-01", "491")
    assert tree.covering(["20194-01", "491"]) == {"20194-01", "491"}


def test_children_before_parents_are_accepted() -> None:
    tree = ZoneTree([Zone("c", "C", "b"), Zone("b", "B", "a"), Zone("a", "A")])
    assert tree.path("c") == ("a", "b", "c")


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        ([Zone("a", "A"), Zone("a", "A again")], "twice"),
        ([Zone("a", "A", "missing")], "unknown parent"),
        ([Zone("a", "A", "b"), Zone("b", "B", "a")], "cycle"),
        ([Zone("", "empty")], "must be"),
        ([Zone(" a", "spaces")], "must be"),
    ],
)
def test_bad_trees_are_rejected_whole(zones: list[Zone], message: str) -> None:
    tree = ZoneTree([Zone("root", "Root")])
    with pytest.raises(ZoneError, match=message):
        tree.add_all(zones)
    assert [z.code for z in tree] == ["root"]


def test_unknown_zone_lookups() -> None:
    tree = province()
    with pytest.raises(ZoneError, match="unknown zone"):
        tree.path("nowhere")
    with pytest.raises(ZoneError, match="already exists"):
        tree.add(Zone("48", "dup"))


@given(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=40))
def test_random_trees_paths_are_consistent(parents: list[int]) -> None:
    # zone i has parent parents[i] % i (zone 0 is the root): always a valid tree
    zones = [Zone("z0", "root")] + [Zone(f"z{i}", f"n{i}", f"z{parents[i] % i}") for i in range(1, len(parents))]
    tree = ZoneTree(reversed(zones))
    for zone in zones:
        path = tree.path(zone.code)
        assert path[0] == "z0"
        assert path[-1] == zone.code
        for ancestor in path:
            assert zone.code in tree.subtree(ancestor)
    assert tree.subtree("z0") == {z.code for z in zones}
