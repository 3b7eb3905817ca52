"""What the fuzz targets share: the scratch file a target rewrites for every input."""

from __future__ import annotations

from loa.bench.fuzz._common import ScratchFile


def test_scratch_file_holds_exactly_the_last_input() -> None:
    file = ScratchFile("test-common")
    for data in (b"x" * 5000, b"abc", b"", bytes(range(256)) * 3, b"z"):
        file.put(data)
        assert file.path.read_bytes() == data


def test_scratch_files_with_the_same_name_share_one_path() -> None:
    first, second = ScratchFile("test-common-shared"), ScratchFile("test-common-shared")
    first.put(b"one")
    assert second.path == first.path
    assert second.path.read_bytes() == b"one"
