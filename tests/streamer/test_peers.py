"""The peers file of restart notices (loa.streamer.peers): what is saved is what loads, hostile or broken files
load as nothing with a reason, and a save that fails leaves the old file whole."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loa.streamer.peers import MAX_FILE_BYTES, Peer, dump_peers, load_peers, parse_peers, save_peers

hosts = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
peers_strategy = st.dictionaries(
    st.binary(min_size=32, max_size=32),
    st.builds(Peer, st.tuples(hosts, st.integers(1, 65535)), st.integers(0, 0xFFFFFFFF)),
    max_size=20,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(peers_strategy)
def test_what_is_saved_loads_back(tmp_path: Path, peers: dict[bytes, Peer]) -> None:
    path = tmp_path / "peers"
    save_peers(path, peers)
    assert load_peers(path) == (peers, None)
    assert [p.name for p in tmp_path.iterdir()] == ["peers"]  # no temporary file left


@given(st.binary(max_size=2000))
def test_any_bytes_load_as_peers_or_nothing_with_a_reason(data: bytes) -> None:
    peers, problem = parse_peers(data)
    assert isinstance(peers, dict)
    if not peers:
        assert problem is not None or data == dump_peers({})


def test_malformed_entries_are_skipped_and_counted() -> None:
    good = [b"k" * 32, "127.0.0.1", 4000, 7]
    rows = [good, [b"k" * 31, "127.0.0.1", 4000, 7], [b"j" * 32, "not-an-ip", 4000, 7],
            [b"j" * 32, "127.0.0.1", 0, 7], [b"j" * 32, "127.0.0.1", 1, 1 << 32], [b"j" * 32, "::1", True, 1],
            "row", [1, 2, 3]]
    peers, problem = parse_peers(msgpack.packb({"v": 1, "peers": rows}, use_bin_type=True))
    assert peers == {b"k" * 32: Peer(("127.0.0.1", 4000), 7)}
    assert problem == "7 malformed entries skipped"


@pytest.mark.parametrize("document", [{"v": 2, "peers": []}, {"v": 1}, [1, 2], {"v": 1, "peers": {}}])
def test_another_shape_is_no_peers_with_a_reason(document: object) -> None:
    peers, problem = parse_peers(msgpack.packb(document, use_bin_type=True))
    assert peers == {}
    assert problem == "not a version 1 peers file"


def test_a_missing_file_is_no_peers_and_no_problem(tmp_path: Path) -> None:
    assert load_peers(tmp_path / "absent") == ({}, None)


@pytest.mark.parametrize("saved", [True, False])
def test_loading_removes_what_a_save_cut_short_left(tmp_path: Path, saved: bool) -> None:
    path = tmp_path / "peers"
    peers = {b"p" * 32: Peer(("192.0.2.4", 4433), 9)}
    if saved:
        save_peers(path, peers)
    (tmp_path / ".peers.k1ll3d.tmp").write_bytes(b"half a fi")
    (tmp_path / "other.tmp").write_bytes(b"not ours")
    assert load_peers(path) == (peers if saved else {}, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other.tmp", *(["peers"] if saved else [])])


def test_an_oversized_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "peers"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    assert load_peers(path) == ({}, f"larger than {MAX_FILE_BYTES} bytes")


def test_a_directory_in_its_place_is_a_reason_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "peers").mkdir()
    peers, problem = load_peers(tmp_path / "peers")
    assert peers == {}
    assert problem is not None
    assert problem.startswith("cannot be read")


@contextlib.contextmanager
def _unwritable(folder: Path, room: int) -> Iterator[str]:
    """Make writing more than about ``room`` bytes into ``folder`` fail: a full tmpfs mounted there as root (root
    writes into read-only folders), a read-only folder otherwise. Yields how."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield "read-only folder"
        finally:
            folder.chmod(0o700)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(folder)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield "full disk"
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_save_that_fails_raises_and_keeps_the_old_file(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "peers"
    old = {bytes([i]) * 32: Peer(("10.0.0.1", 4433), i) for i in range(3)}
    big = {i.to_bytes(32, "big"): Peer(("2001:db8::1", 4433), i) for i in range(20_000)}  # about 1.2 MB
    if os.geteuid() != 0:
        save_peers(path, old)  # before the folder becomes read-only
    with _unwritable(folder, 256 * 1024) as how:
        if how == "full disk":
            save_peers(path, old)  # into the tmpfs, which has room for it
        with pytest.raises(OSError, match=r"No space|Permission|Read-only") as refused:
            save_peers(path, big)
        assert refused.value.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS)
        assert load_peers(path) == (old, None)
        assert [p.name for p in folder.iterdir()] == ["peers"]  # the temporary file is gone
