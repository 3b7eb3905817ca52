"""What the fuzz targets share: a reader that takes typed values off the front of an input, and the vectors.

Nothing here needs atheris: a target runs the same way under the fuzzer, in the corpus replay test and by hand.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["Reader", "ScratchFile", "scratch", "vectors"]

_VECTORS = Path(__file__).resolve().parent.parent.parent / "spec" / "vectors"


class Reader:
    """Takes values off the front of ``data``; past its end every value is zero (or empty), never an error."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        self._pos += 1
        return self._data[self._pos - 1]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size).ljust(size, b"\0"), "big")

    def take(self, size: int) -> bytes:
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out


@functools.cache
def vectors(area: str) -> dict[str, Any]:
    """The parsed ``spec/vectors/<area>.json`` (session, control, alert, media, priority)."""
    loaded: dict[str, Any] = json.loads((_VECTORS / f"{area}.json").read_text(encoding="utf-8"))
    return loaded


@functools.cache
def scratch() -> Path:
    """A private directory for the files a target reads back: ``$LOA_FUZZ_SCRATCH`` when the fuzz runner gives
    one (it removes it: libFuzzer ends a process without running ``atexit``), else a new one removed at exit."""
    given = os.environ.get("LOA_FUZZ_SCRATCH")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    path = Path(tempfile.mkdtemp(prefix="loa-fuzz-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class ScratchFile:
    """One file in :func:`scratch` that a target rewrites for every input, for parsers that read a path.

    The file stays open; each input overwrites it in place and cuts it to length. A fresh ``write_bytes``
    per input truncates and reallocates the file, which on a disk file system costs a few hundred
    microseconds, more than most parsers take; this costs a few. The parser still opens and reads a real file.
    """

    __slots__ = ("_fd", "path")

    def __init__(self, name: str) -> None:
        self.path = scratch() / name
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def put(self, data: bytes) -> None:
        """Make the file hold exactly ``data``."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], done)
        os.ftruncate(self._fd, len(data))
