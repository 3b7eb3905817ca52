"""Content-addressed store of stored programmes (PROTOCOL.md sections 4.9 and 5.8), and fetch rate limits.

A programme is an Ogg Opus file named by its content id ``cid`` = SHA-256 of the whole file; an e-board image
(PNG or JPEG) is named the same way. The store is one directory holding ``<hex cid>.opus`` and ``.img``
files; :meth:`ContentStore.publish` checks a file strictly (mono Ogg Opus,
CRCs, page sequence, end of stream) and copies it in atomically. :meth:`ContentStore.read` serves the byte ranges
devices ``fetch`` with positioned reads from a small cache of open files, so a large library costs no memory.

Failure semantics: :meth:`publish` raises :class:`ContentError` naming the file (not Ogg Opus, damaged, not
mono, unreadable, store not writable) and leaves nothing behind in the store. :meth:`read` of an unknown cid
raises ``KeyError``; an I/O error on a stored file raises :class:`ContentError`.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from loa.codecs import CodecError, read_ogg_opus
from loa.codecs.atomic import atomic_write

__all__ = ["CHUNK_MAX", "ChunkLimiter", "ContentError", "ContentInfo", "ContentStore"]

CHUNK_MAX = 1024
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
_OPEN_FILES = 16


class ContentError(ValueError):
    """A programme that cannot be stored or served; the message names the file."""


@dataclass(frozen=True, slots=True)
class ContentInfo:
    cid: bytes
    size: int
    name: str
    duration_ns: int
    path: str


class ContentStore:
    """The programmes of one server, in ``directory`` (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ContentError(f"cannot create the content directory {str(self.directory)!r}: "
                               f"{exc.strerror or exc}") from None
        self._index: dict[bytes, ContentInfo] = {}
        self._files: OrderedDict[bytes, int] = OrderedDict()

    def publish(self, path: str | os.PathLike[str], *, name: str | None = None) -> ContentInfo:
        """Check ``path`` and store it under its cid (a no-op if already stored); returns its description."""
        source = os.fspath(path)
        try:
            info, _ = read_ogg_opus(source)
            blob = Path(source).read_bytes()
        except CodecError as exc:
            raise ContentError(str(exc)) from None
        except OSError as exc:
            raise ContentError(f"cannot read {source!r}: {exc.strerror or exc}") from None
        if info.channels != 1:
            raise ContentError(f"{source!r}: stored programmes are mono, this one has {info.channels} channels")
        cid = hashlib.sha256(blob).digest()
        target = self.directory / f"{cid.hex()}.opus"
        if not target.exists():
            try:
                atomic_write(target, blob)
            except OSError as exc:
                raise ContentError(f"cannot store {source!r} in {str(self.directory)!r}: "
                                   f"{exc.strerror or exc}") from None
        entry = ContentInfo(cid, len(blob), name if name is not None else Path(source).name[:128],
                            info.samples * 1_000_000_000 // 48_000, str(target))
        self._index[cid] = entry
        return entry

    def publish_image(self, path: str | os.PathLike[str], *, name: str | None = None) -> ContentInfo:
        """Store a PNG or JPEG (for e-boards) under its cid, as :meth:`publish` does a programme."""
        source = os.fspath(path)
        try:
            blob = Path(source).read_bytes()
        except OSError as exc:
            raise ContentError(f"cannot read {source!r}: {exc.strerror or exc}") from None
        if not blob.startswith(IMAGE_MAGIC):
            raise ContentError(f"{source!r} is not a PNG or JPEG image")
        cid = hashlib.sha256(blob).digest()
        target = self.directory / f"{cid.hex()}.img"
        if not target.exists():
            try:
                atomic_write(target, blob)
            except OSError as exc:
                raise ContentError(f"cannot store {source!r} in {str(self.directory)!r}: "
                                   f"{exc.strerror or exc}") from None
        entry = ContentInfo(cid, len(blob), name if name is not None else Path(source).name[:128], 0, str(target))
        self._index[cid] = entry
        return entry

    def get(self, cid: bytes) -> ContentInfo | None:
        """The stored programme or image ``cid`` (found in the directory if published by an earlier run)."""
        entry = self._index.get(cid)
        if entry is not None:
            return entry
        if len(cid) != 32:
            return None
        image = self.directory / f"{cid.hex()}.img"
        if image.is_file():
            try:
                blob = image.read_bytes()
            except OSError:
                return None
            if hashlib.sha256(blob).digest() != cid:
                return None
            entry = ContentInfo(cid, len(blob), image.name, 0, str(image))
            self._index[cid] = entry
            return entry
        target = self.directory / f"{cid.hex()}.opus"
        if not target.is_file():
            return None
        try:
            info, _ = read_ogg_opus(target)
        except CodecError:
            return None
        if info.sha256 != cid.hex():
            return None
        entry = ContentInfo(cid, info.size_bytes, target.name, info.samples * 1_000_000_000 // 48_000, str(target))
        self._index[cid] = entry
        return entry

    def read(self, cid: bytes, offset: int, length: int) -> bytes:
        """``min(length, size - offset)`` bytes at ``offset`` (empty past the end); ``length`` is capped at 1024."""
        entry = self._index[cid]
        length = max(0, min(length, CHUNK_MAX, entry.size - offset))
        if length == 0:
            return b""
        fd = self._files.get(cid)
        try:
            if fd is None:
                fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                self._files[cid] = fd
                if len(self._files) > _OPEN_FILES:
                    os.close(self._files.popitem(last=False)[1])
            else:
                self._files.move_to_end(cid)
            return os.pread(fd, length, offset)
        except OSError as exc:
            raise ContentError(f"cannot read stored programme {entry.path!r}: {exc.strerror or exc}") from None

    def close(self) -> None:
        while self._files:
            os.close(self._files.popitem()[1])


class ChunkLimiter:
    """A token bucket per device: at most ``burst`` chunks at once and ``rate`` chunks per second after."""

    def __init__(self, *, rate: float = 400.0, burst: int = 32) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def allow(self, device: Hashable, now: float) -> bool:
        tokens, last = self._buckets.get(device, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[device] = (tokens, now)
            return False
        self._buckets[device] = (tokens - 1.0, now)
        return True

    def forget(self, device: Hashable) -> None:
        self._buckets.pop(device, None)
