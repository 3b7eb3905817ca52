"""The content store's folder of unfinished files: what a process that died mid-upload left is swept away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.control_plane.content import ContentStore


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_incoming_files_carry_the_owning_process(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    path = store.incoming(".opus")
    assert path.parent == tmp_path / "content" / ".incoming"
    assert path.name.startswith(f"{os.getpid()}.")
    assert path.suffix == ".opus"
    assert store.incoming(".opus") != path


def test_sweep_removes_what_a_dead_process_left_and_keeps_a_live_one(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    mine = store.incoming(".opus")
    mine.write_bytes(b"still being written")
    folder = mine.parent
    dead = folder / f"{_dead_pid()}.0123456789abcdef.opus"
    dead.write_bytes(b"cut by a kill")
    unnamed = folder / "fedcba9876543210.png"  # no owner in the name: written before owners were recorded
    unnamed.write_bytes(b"old")
    stored, final = store.put_bytes(b"a stored file", "text/plain")
    assert store.sweep() == 2
    assert sorted(p.name for p in folder.iterdir()) == [mine.name]
    assert final.read_bytes() == b"a stored file"
    assert store.has(stored, "text/plain")
    assert store.sweep() == 0


def test_sweep_of_a_store_never_written_is_nothing(tmp_path: Path) -> None:
    assert ContentStore(tmp_path / "nothing-here").sweep() == 0
    assert not (tmp_path / "nothing-here").exists()


@settings(max_examples=25, deadline=None)
@given(owners=st.lists(st.sampled_from(["live", "dead", "none"]), max_size=12))
def test_sweep_removes_exactly_the_files_of_processes_that_are_gone(
        tmp_path_factory: pytest.TempPathFactory, owners: list[str]) -> None:
    root = tmp_path_factory.mktemp("store")
    store = ContentStore(root)
    folder = store.incoming().parent
    dead = _dead_pid()
    kept = set()
    for i, owner in enumerate(owners):
        name = {"live": f"{os.getpid()}.{i:016x}", "dead": f"{dead}.{i:016x}", "none": f"x{i:015x}"}[owner]
        (folder / f"{name}.opus").write_bytes(b"partial")
        if owner == "live":
            kept.add(f"{name}.opus")
    assert store.sweep() == len(owners) - len(kept)
    assert {p.name for p in folder.iterdir()} == kept
